"""Archive whole months of finalized usage snapshots: Parquet files, then one partition swap.

Why (docs/scaling.md §2): ``usage_snapshots`` grows by a row per changed subscription per hour
(72M a month at 100,000 subscriptions). Partitioned by month (migration 0015), a finalized
month leaves PostgreSQL by replacing its partition, instead of a delete of every row and the
vacuum after it.

Which months: those wholly before ``--before`` (``models.archive.wholly_before``), under the same
rule as events (``check_horizon``: every period before the horizon is on a finalized invoice).
What stays: every snapshot something still names -- the one ``usage_amounts`` points at for
each (subscription, period) (``due_subscriptions`` reads it; it is the period's last word) and
any a wallet position names. A month at 100,000 subscriptions keeps ~100,000 of its 72M rows.
What reads old snapshots otherwise: ``usage_as_of`` for a past hour (the hourly report) and
``tallyflow export usage``; after the archive they find the month's kept rows in the table and
the rest in the files (``read_archive``). Invoices never read snapshots (they rate usage state).
Ledger rows (``wallet_transactions.snapshot_id``) keep the ids, which the files hold.

Exactly once, month by month, in one transaction that locks the month's partition against
writes (SHARE: reads go on):

1. the snapshots that stay are copied aside; the others go to ``<target>/_tmp/<uuid>.parquet``;
2. the files are recorded in ``snapshot_archives``, the partition is dropped and made again,
   and the kept rows go back into it; commit;
3. each file moves to ``<target>/usage_snapshots/month=YYYY-MM/<first id>-<last id>.parquet``
   and its row is marked moved.

A crash before the commit leaves unrecorded temporary files (removed by the next run, which
writes the rows again); after it, recorded files under their temporary name (moved by the next
run: ``tasks.archive.finish_interrupted``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.partitions import (
    COLUMNS,
    PARENT,
    create_month,
    ensure_partitions,
    month_after,
    month_partitions,
)
from tallyflow.models.archive import wholly_before
from tallyflow.models.lago.results import SnapshotArchiveFigures
from tallyflow.tasks.archive.events import (
    DEFAULT_CHUNK_ROWS,
    check_horizon,
    finish_interrupted,
    full_url,
    write_parquet,
)

SNAPSHOT_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("subscription_id", pa.int64()),
    ("external_subscription_id", pa.string()),
    ("period_start", pa.timestamp("us", tz="UTC")),
    ("period_end", pa.timestamp("us", tz="UTC")),
    ("as_of", pa.timestamp("us", tz="UTC")),
    ("fold_watermark", pa.int64()),
    ("catalog_at", pa.timestamp("us", tz="UTC")),
    ("currency", pa.string()),
    ("amount_cents", pa.string()),  # numeric as text: no float on the way
    ("precise_amount_cents", pa.string()),
    ("events_count", pa.int64()),
    ("usage", pa.string()),  # the stored JSON text, exactly
    ("flow_run_id", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])
_AS_TEXT = COLUMNS.replace("amount_cents, precise_amount_cents", "amount_cents::text, "
                           "precise_amount_cents::text").replace("usage,", "usage::text,")

_RECORD = text(
    """
    insert into snapshot_archives (month, before, url, temporary_url, rows, kept,
                                   first_snapshot_id, last_snapshot_id)
    values (:month, :before, :url, :tmp, :rows, :kept, :first_id, :last_id)
    """
)


@dataclass
class SnapshotArchiveSummary:
    """What a run did (``tallyflow archive --json`` prints ``as_dict()`` under ``snapshots``)."""

    before: datetime
    months: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows: int = 0
    kept: int = 0
    finished_moves: int = 0
    removed_temporary: int = 0

    def as_dict(self) -> SnapshotArchiveFigures:
        return {"before": self.before.isoformat(), "months": list(self.months),
                "files": list(self.files), "rows": self.rows, "kept": self.kept,
                "finished_moves": self.finished_moves,
                "removed_temporary": self.removed_temporary}


def _keep_aside(conn: Connection, name: str) -> int:
    """Copy the month's snapshots that something names into ``tf_kept``; returns how many."""
    # ids are unique across months (one sequence), so the id alone finds a named snapshot;
    # one hashed set of the named ids, one scan of the month
    conn.execute(text(
        f"create temp table tf_kept on commit drop as select {COLUMNS} from {name}"  # noqa: S608
        " where id in (select snapshot_id from usage_amounts union all"
        "              select snapshot_id from wallet_usage_positions"
        "              where snapshot_id is not null)"))
    return int(conn.execute(text("select count(*) from tf_kept")).scalar_one())


def _archive_month(
    engine: Engine, month: datetime, name: str, summary: SnapshotArchiveSummary, fs: Any,
    root: str, chunk_rows: int,
) -> None:
    label = f"{month:%Y-%m}"
    written: list[dict[str, Any]] = []
    with engine.connect() as conn, conn.begin():
        conn.execute(text(f"lock table {name} in share mode"))  # writes wait, reads go on
        kept = _keep_aside(conn, name)
        result = conn.execute(
            text(f"select {_AS_TEXT} from {name} s"  # noqa: S608 - fixed names
                 " where not exists (select 1 from tf_kept k where k.id = s.id) order by s.id"),
            execution_options={"stream_results": True})
        for part in result.partitions(chunk_rows):
            rows = [tuple(r) for r in part]
            tmp = full_url(fs, f"{root}/_tmp/{uuid.uuid4().hex}.parquet")
            url = full_url(fs, f"{root}/usage_snapshots/month={label}/"
                               f"{rows[0][0]:020d}-{rows[-1][0]:020d}.parquet")
            write_parquet(fs, tmp, rows, SNAPSHOT_SCHEMA)
            written.append({"month": month, "before": summary.before, "url": url, "tmp": tmp,
                            "rows": len(rows), "kept": kept, "first_id": rows[0][0],
                            "last_id": rows[-1][0]})
        result.close()
        failpoint("archive.snapshots_after_write")
        if not written:  # only named snapshots left: nothing to move
            return
        for row in written:
            conn.execute(_RECORD, row)
        conn.execute(text(f"drop table {name}"))
        create_month(conn, month)
        conn.execute(text(
            f"insert into {PARENT} ({COLUMNS}) select {COLUMNS} from tf_kept"))  # noqa: S608
        failpoint("archive.snapshots_before_commit")
    failpoint("archive.snapshots_after_commit")
    for row in written:
        fs.makedirs(row["url"].rsplit("/", 1)[0], exist_ok=True)
        fs.mv(row["tmp"], row["url"])
        with engine.begin() as conn:
            conn.execute(text("update snapshot_archives set moved = true where url = :u"),
                         {"u": row["url"]})
        summary.files.append(row["url"])
        summary.rows += row["rows"]
    summary.months.append(label)
    summary.kept += kept


def archive_snapshots(
    engine: Engine, before: datetime, fs: Any, root: str, *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> SnapshotArchiveSummary:
    """Move the snapshots of every month wholly before ``before`` to Parquet files under
    ``root`` on ``fs``, keeping those still named; returns what moved."""
    if before.tzinfo is None:
        raise UserError(f"--before {before.isoformat()} has no timezone",
                        "give an offset, e.g. 2026-01-01T00:00:00Z")
    root = root.rstrip("/")
    summary = SnapshotArchiveSummary(before.astimezone(UTC))
    summary.finished_moves, summary.removed_temporary = finish_interrupted(engine, fs, root)
    with engine.begin() as conn:
        check_horizon(conn, before)
        ensure_partitions(conn, [])  # rows waiting in the default partition go to their months
        months = month_partitions(conn)
    fs.makedirs(f"{root}/_tmp", exist_ok=True)
    for month in wholly_before(before, ((m, month_after(m)) for m in months)):
        _archive_month(engine, month, months[month], summary, fs, root, chunk_rows)
    return summary
