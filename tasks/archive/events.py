"""Archive finalized history: events before a horizon go to Parquet files, out of PostgreSQL.

Why (docs/scaling.md, "Archiving"): the hourly path never rescans raw events, but a year of
them still weighs on ingest (the dedup index grows), backups and rebuilds. Events whose periods
are all on finalized invoices can never be billed again (models/archive.py has the rule), so
they can live as Parquet next to the batches they came from.

Exactly once, nothing lost (design.md invariants 2-4), file by file:

1. the rows go to ``<target>/_tmp/<uuid>.parquet``;
2. one transaction records the file in ``event_archives`` and deletes exactly the events it
   holds (by their dedup key);
3. the file moves to ``<target>/events/before=<horizon>/<first id>-<last id>.parquet`` and its
   row is marked moved.

A crash before 2 leaves an unrecorded temporary file, which the next run removes (its rows are
still in the table and are written again); a crash after 2 leaves a recorded file under its
temporary name, which the next run moves. So an event is either in the table or in exactly one
recorded file. Events that arrive for the archived span afterwards are refused at ingest
(reason ``archived_period``): they could be deduplicated against nothing, and their invoices
are final. Usage states of archived periods stay in the database (recurring metrics carry them);
rebuilds recompute only the periods from the horizon on (``tasks.folding``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.infra.failpoints import failpoint
from tallyflow.models.archive import ArchiveSubject, last_moment, unfinished
from tallyflow.models.lago.results import EventArchiveSummary
from tallyflow.tasks.folding import archive_horizon, load_subscription_rows

DEFAULT_CHUNK_ROWS = 500_000

_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("external_subscription_id", pa.string()),
    ("transaction_id", pa.string()),
    ("code", pa.string()),
    ("timestamp", pa.timestamp("us", tz="UTC")),
    ("properties", pa.string()),  # the stored JSON text, exactly
    ("precise_total_amount_cents", pa.string()),  # numeric as text: no float on the way
    ("object_id", pa.int64()),
    ("row_number", pa.int64()),
    ("sub_index", pa.int32()),
    ("ingested_at", pa.timestamp("us", tz="UTC")),
])

_ROWS = text(
    """
    select id, external_subscription_id, transaction_id, code, "timestamp",
           properties::text as properties, precise_total_amount_cents::text as precise,
           object_id, row_number, sub_index, ingested_at
    from events where "timestamp" < :before
      and voided_at is null  -- voided events stay in PostgreSQL with their trail (corrections)
    """
)

_DELETE = text(
    """
    delete from events e
    using unnest(cast(:subs as text[]), cast(:txns as text[])) as k(sub, txn)
    where e.external_subscription_id = k.sub and e.transaction_id = k.txn
    """
)

_RECORD = text(
    """
    insert into event_archives (before, url, temporary_url, rows, first_event_id, last_event_id,
                                first_timestamp, last_timestamp)
    values (:before, :url, :tmp, :rows, :first_id, :last_id, :first_ts, :last_ts)
    on conflict (url) do nothing
    """
)

_FINALIZED_UNTIL = text(
    """
    select i.subscription_id, max(i.to_datetime) as until
    from invoice_subscriptions i
    join invoices v on v.id = i.invoice_id and v.status = 'finalized'
    group by i.subscription_id
    """
)


__all__ = ["ArchiveRefused", "ArchiveSummary", "archive_events", "archive_horizon",
           "check_horizon", "finish_interrupted", "full_url", "read_archive"]


class ArchiveRefused(UserError):
    """The horizon would take events that something can still bill."""


@dataclass
class ArchiveSummary:
    """What a run did (``tallyflow archive --json`` prints ``as_dict()``)."""

    before: datetime
    files: list[str] = field(default_factory=list)
    rows: int = 0
    finished_moves: int = 0
    removed_temporary: int = 0

    def as_dict(self) -> EventArchiveSummary:
        return {"before": self.before.isoformat(), "files": list(self.files), "rows": self.rows,
                "finished_moves": self.finished_moves,
                "removed_temporary": self.removed_temporary}


def _subjects(conn: Connection, before: datetime) -> list[ArchiveSubject]:
    until = {int(r.subscription_id): r.until for r in conn.execute(_FINALIZED_UNTIL)}
    skip = {int(i) for i in conn.execute(text(
        "select id from subscriptions where on_termination_invoice = 'skip'")).scalars()}
    subjects = []
    for sub in load_subscription_rows(conn):
        subject = ArchiveSubject(sub.external_id, sub.subscription_at, sub.terminated_at,
                                 until.get(sub.id), sub.id in skip, sub.subscription_at)
        if subject.starts < before:
            last = sub.period_at(last_moment(subject, before)).period_start
            subject = replace(subject, last_period_start=last)
        subjects.append(subject)
    return subjects


def check_horizon(conn: Connection, before: datetime) -> None:
    """Raise ``ArchiveRefused`` unless every period before ``before`` is final."""
    blocking = unfinished(before, _subjects(conn, before))
    if blocking:
        shown = ", ".join(blocking[:5]) + (f" and {len(blocking) - 5} more"
                                           if len(blocking) > 5 else "")
        raise ArchiveRefused(
            f"cannot archive before {before.isoformat()}: periods of {shown} before it are "
            f"not on a finalized invoice",
            "close those periods first (the billing cycle or `tallyflow invoices close`), or "
            "give an earlier --before")


# The archive's ledgers of files (fixed names), one per kind of history (tasks/archive_snapshots)
_LEDGERS = ("event_archives", "snapshot_archives")


def finish_interrupted(engine: Engine, fs: Any, root: str) -> tuple[int, int]:
    """Move recorded files (of either ledger) left under their temporary name; remove
    unrecorded ones. Returns (files moved, temporary files removed)."""
    recorded: dict[str, tuple[str, int, str]] = {}
    with engine.connect() as conn:
        for ledger in _LEDGERS:
            for r in conn.execute(text(
                    f"select id, url, temporary_url from {ledger} where not moved")):  # noqa: S608
                recorded[r.temporary_url] = (ledger, r.id, r.url)
    moved = removed = 0
    for tmp, (ledger, row_id, url) in recorded.items():
        if fs.exists(tmp):
            fs.makedirs(url.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(tmp, url)
        with engine.begin() as conn:
            conn.execute(text(f"update {ledger} set moved = true where id = :id"),  # noqa: S608
                         {"id": row_id})
        moved += 1
    folder = f"{root}/_tmp"
    if fs.exists(folder):
        for path in fs.ls(folder, detail=False):
            if full_url(fs, path) not in recorded:
                fs.rm(path)
                removed += 1
    return moved, removed


def full_url(fs: Any, path: str) -> str:
    """The path with its protocol (what the ledgers record)."""
    return str(fs.unstrip_protocol(path)) if hasattr(fs, "unstrip_protocol") else path


def write_parquet(fs: Any, path: str, rows: list[Any], schema: pa.Schema = _SCHEMA) -> None:
    """One archive file from database rows (events by default), typed by ``schema``."""
    columns = list(zip(*rows, strict=True))
    table = pa.Table.from_arrays(
        [pa.array(values, type=col.type) for values, col in zip(columns, schema, strict=True)],
        schema=schema)
    with fs.open(path, "wb") as out:
        pq.write_table(table, out, compression="zstd")


def archive_events(
    engine: Engine, before: datetime, fs: Any, root: str, *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ArchiveSummary:
    """Move every event before ``before`` to Parquet files under ``root`` on ``fs``."""
    if before.tzinfo is None:
        raise UserError(f"--before {before.isoformat()} has no timezone",
                        "give an offset, e.g. 2026-01-01T00:00:00Z")
    root = root.rstrip("/")
    summary = ArchiveSummary(before.astimezone(UTC))
    summary.finished_moves, summary.removed_temporary = finish_interrupted(engine, fs, root)
    with engine.connect() as conn:
        check_horizon(conn, before)
    fs.makedirs(f"{root}/_tmp", exist_ok=True)
    stamp = summary.before.strftime("%Y-%m-%dT%H%M%S%fZ")
    with engine.connect() as reading:
        reading = reading.execution_options(isolation_level="REPEATABLE READ",
                                            stream_results=True, yield_per=chunk_rows)
        with reading.begin():
            result = reading.execute(_ROWS, {"before": before})
            for partition in result.partitions(chunk_rows):
                rows = sorted((tuple(r) for r in partition), key=lambda r: r[0])
                tmp = full_url(fs, f"{root}/_tmp/{uuid.uuid4().hex}.parquet")
                url = full_url(fs, f"{root}/events/before={stamp}/"
                                f"{rows[0][0]:020d}-{rows[-1][0]:020d}.parquet")
                write_parquet(fs, tmp, rows)
                failpoint("archive.after_write")
                with engine.begin() as conn:
                    conn.execute(_RECORD, {
                        "before": before, "url": url, "tmp": tmp, "rows": len(rows),
                        "first_id": rows[0][0], "last_id": rows[-1][0],
                        "first_ts": min(r[4] for r in rows), "last_ts": max(r[4] for r in rows)})
                    conn.execute(_DELETE, {"subs": [r[1] for r in rows],
                                           "txns": [r[2] for r in rows]})
                    failpoint("archive.before_commit")
                failpoint("archive.after_commit")
                fs.makedirs(url.rsplit("/", 1)[0], exist_ok=True)
                fs.mv(tmp, url)
                with engine.begin() as conn:
                    conn.execute(text("update event_archives set moved = true where url = :u"),
                                 {"u": url})
                summary.files.append(url)
                summary.rows += len(rows)
    if not summary.files:  # nothing (left) to move: the horizon still moves, for ingest
        with engine.begin() as conn:
            conn.execute(_RECORD, {"before": before, "url": f"{root}/events/before={stamp}/",
                                   "tmp": "", "rows": 0, "first_id": 0, "last_id": 0,
                                   "first_ts": before, "last_ts": before})
            conn.execute(text("update event_archives set moved = true where url = :u"),
                         {"u": f"{root}/events/before={stamp}/"})
    return summary


def read_archive(fs: Any, urls: list[str]) -> pa.Table:
    """The archived events of these files, as one table (for exports and checks)."""
    return pa.concat_tables([pq.read_table(fs.open(u, "rb")) for u in urls])
