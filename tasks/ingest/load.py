"""Ingestion I/O: the object ledger, and loading one object in one Postgres transaction.

Exactly once rests on three facts, all in Postgres:
1. ``ingest_objects`` is unique per (source, url, version): listing twice registers once.
2. An object is claimed with ``FOR UPDATE SKIP LOCKED`` inside the transaction that loads it, and
   marked ingested in that same transaction: a crash rolls everything back and releases the claim;
   a concurrent run skips it.
3. Events are unique per (external_subscription_id, transaction_id) and inserted in row order
   (a plain insert, else ``ON CONFLICT DO NOTHING``: see ``_merge``): the first copy wins; a
   re-dropped or changed object adds only what is new.

Which copy is first is deterministic. Within a run, objects load in the order of their URL
(then version): each object is read and staged in parallel with the others, but merges into
``events`` only once the objects listed before it in the run have committed, so the same
objects give the same events whatever order they arrived in or which worker was faster. A later
copy identical to the stored one is a plain duplicate -- numbers compared by value, so ``"100"``
from a CSV, ``100`` and ``100.0`` are the same -- and a later copy with *different* content
(code, properties, precise amount, or a given timestamp) is a conflict: kept out, counted in
``conflicts`` and stored as a rejected row (``conflicting_duplicate``) naming the object and row
of the copy that was kept, and the properties that differ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import psycopg
from prefect import task
from sqlalchemy import Connection, Engine, text
from sqlalchemy import exc as sa_exc

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.events import (
    Reason,
    Rejection,
    TimeBounds,
    differing_properties,
    quoted_value,
)
from tallyflow.models.lago.results import ReplayedObject
from tallyflow.models.lago.summaries import IngestFigures, IngestRunSummary, ReplayTotals
from tallyflow.models.lifecycle import BILLING_ROW_SQL, life_holds_sql
from tallyflow.tasks.ingest.columnar import applies as columnar
from tallyflow.tasks.ingest.columnar import staged_jsonl
from tallyflow.tasks.ingest.readers import READERS, ObjectUnreadable, loads_exact
from tallyflow.tasks.ingest.replay import reconcile
from tallyflow.tasks.ingest.requests import withhold_repeated_requests
from tallyflow.tasks.ingest.sources import ObjectRef, Source, SourceSpec, build_source
from tallyflow.tasks.ingest.staging import (
    STAGING,
    RejectedRow,
    Staged,
    fewer_gc_passes,
    prefetch,
    staged_event_json,
    validated,
)
from tallyflow.tasks.runs import transient_retries

DEFAULT_CHUNK_ROWS = 20_000
# How long an object waits for the objects listed before it in its run before it merges anyway.
DEFAULT_ORDER_TIMEOUT = 600.0
_log = logging.getLogger(__name__)


@dataclass
class ObjectResult:
    object_id: int
    url: str
    status: str  # ingested | failed | skipped (another worker has it, or it is done)
    # events staged plus records rejected (kept as it was; ``records`` and ``events`` are the
    # counts to reconcile with: records = records_emitted + rejected + records_empty)
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unbillable: int = 0
    conflicts: int = 0
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    # Every record read is emitted (one or more events), rejected (``rejected``: one rejected
    # row each) or empty (``no_usage``: a mapping gave no event; counted, not stored).
    # ``events``: what the emitted records gave = accepted + duplicates + conflicts.
    records: int = 0
    records_emitted: int = 0
    records_empty: int = 0
    events: int = 0
    # usage fields a mapping does not know -> records carrying them (billed what was known)
    unmapped_usage_fields: dict[str, int] = field(default_factory=dict)
    # the mapping's field paths that no record of the object matched
    paths_never_matched: list[str] = field(default_factory=list)
    # a replay row (tasks/ingest/replay.py): what it did to the replaced object's records
    replay: ReplayedObject | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Run history
# --------------------------------------------------------------------------------------------


def start_run(engine: Engine, source_key: str, flow_run_id: str | None) -> int:
    """The run's row, not yet ``listed``: its start counts for the ingest watermark only once
    its listing is registered (``register_objects``), so a run that died before, and a
    reclaim, which lists nothing, never move the watermark (tasks/invoicing/watermark.py)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                text("insert into ingest_runs (source, flow_run_id, listed)"
                     " values (:s, :f, false) returning id"),
                {"s": source_key, "f": flow_run_id},
            ).scalar_one()
        )


def finish_run(
    engine: Engine, run_id: int, results: list[ObjectResult], seconds: float
) -> IngestRunSummary:
    summary = summarise(results)
    status = "failed" if summary["failed_objects"] else "completed"
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                update ingest_runs set status = :status, objects = :objects,
                  failed_objects = :failed_objects, accepted = :accepted,
                  duplicates = :duplicates, rejected = :rejected, unbillable = :unbillable,
                  conflicts = :conflicts, bytes = :bytes, seconds = :seconds,
                  records = :records, records_emitted = :records_emitted,
                  records_empty = :records_empty, events = :events,
                  finished_at = now()
                where id = :id
                """
            ),
            {**summary, "status": status, "seconds": round(seconds, 3), "id": run_id},
        )
    _record_mapping_report(engine, "ingest_runs", run_id, summary["unmapped_usage_fields"],
                           summary["paths_never_matched"])
    return {"run_id": run_id, "status": status, **summary, "seconds": round(seconds, 3)}


def _record_mapping_report(conn: Engine | Connection, table: str, row_id: int,
                           unmapped: dict[str, int], never: Any) -> None:
    """What the mapping did not know (usage fields) or never found (paths), kept apart from
    the row counts: only written when there is something to say."""
    if not unmapped and not never:
        return
    statement = _REPORT_SQL[table]
    params = {"id": row_id, "u": orjson.dumps(unmapped).decode(),
              "p": orjson.dumps(never).decode()}
    if isinstance(conn, Engine):
        with conn.begin() as tx:
            tx.execute(statement, params)
    else:
        conn.execute(statement, params)


_REPORT_SQL = {
    "ingest_runs": text("update ingest_runs set unmapped_usage_fields = cast(:u as jsonb),"
                        " paths_never_matched = cast(:p as jsonb) where id = :id"),
    "ingest_objects": text("update ingest_objects set unmapped_usage_fields = cast(:u as jsonb),"
                           " paths_never_matched = cast(:p as jsonb) where id = :id"),
}


def summarise(results: list[ObjectResult]) -> IngestFigures:
    done = [r for r in results if r.status != "skipped"]
    unmapped: dict[str, int] = {}
    never: dict[str, int] = {}  # path -> objects in which no record matched it
    for result in done:
        for name, count in result.unmapped_usage_fields.items():
            unmapped[name] = unmapped.get(name, 0) + count
        for path in result.paths_never_matched:
            never[path] = never.get(path, 0) + 1
    figures: IngestFigures = {
        "objects": sum(1 for r in done if r.status == "ingested"),
        "failed_objects": sum(1 for r in done if r.status == "failed"),
        "skipped_objects": sum(1 for r in results if r.status == "skipped"),
        "accepted": sum(r.accepted for r in done),
        "duplicates": sum(r.duplicates for r in done),
        "rejected": sum(r.rejected for r in done),
        "unbillable": sum(r.unbillable for r in done),
        "conflicts": sum(r.conflicts for r in done),
        "bytes": sum(r.bytes for r in done),
        # ACCOUNTING, in its order
        "records": sum(r.records for r in done),
        "records_emitted": sum(r.records_emitted for r in done),
        "records_empty": sum(r.records_empty for r in done),
        "events": sum(r.events for r in done),
        "unmapped_usage_fields": dict(sorted(unmapped.items())),
        "paths_never_matched": dict(sorted(never.items())),
    }
    if any(r.replay for r in done):
        figures["replay"] = _replay_totals([r.replay for r in done if r.replay])
    return figures


def _replay_totals(replays: list[ReplayedObject]) -> ReplayTotals:
    """A replay run's totals (tasks/ingest/replay.py), the records kept listed for a credit note."""
    return {"objects": len(replays),
            "records_unchanged": sum(r["records_unchanged"] for r in replays),
            "records_replaced": sum(r["records_replaced"] for r in replays),
            "records_kept": sum(r["records_kept"] for r in replays),
            "events_voided": sum(r["events_voided"] for r in replays),
            "events_renamed": sum(r["events_renamed"] for r in replays),
            "kept": [k for r in replays for k in r["kept"]]}


# The record accounting of an object and of a run (docs/data-quality.md, "Every record
# accounted for"): records = records_emitted + rejected + records_empty, events counted apart.
ACCOUNTING = ("records", "records_emitted", "records_empty", "events")


# --------------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------------


def register_objects(
    engine: Engine, source: Source | str, refs: Iterable[ObjectRef], run_id: int | None = None
) -> list[int]:
    """Record every listed object (new ones only) and return the ids still to ingest, in the
    run's load order: by URL, then version (never by discovery order, which depends on when
    objects arrived and how a backend lists them).

    Pending and failed objects of this source come back too, so an object that failed last
    time, or whose loader crashed, is retried by the next run. Given a ``Source``, each row
    also records its kind and settings (mapping, format, options), which re-ingesting uses;
    a bare key records the defaults (fsspec, lago).

    ``run_id``: the ingest run that will load them claims them (``claimed_by``), in the same
    transaction that registers them, so a pending object always names a claimer once listed
    by a run: if that run dies, its claim is told dead and reclaimed (tasks/ingest/claims.py).
    The same transaction marks the run ``listed``: from then on its start counts for the
    ingest watermark, since everything it listed is in the ledger.
    """
    source_key, fingerprint, rows = _ledger_rows(source, refs)
    failpoint("ingest.after_listing")
    with engine.begin() as conn:
        if rows:
            conn.execute(_REGISTER, rows)
        ids = [
            int(i)
            for i in conn.execute(_TO_LOAD, {"s": source_key, "fp": fingerprint}).scalars()
        ]
        if run_id is not None:
            conn.execute(_CLAIM_LISTED, {"run": run_id, "ids": ids})
            conn.execute(text("update ingest_runs set listed = true where id = :run"),
                         {"run": run_id})
        return ids


def _ledger_rows(
    source: Source | str, refs: Iterable[ObjectRef]
) -> tuple[str, str | None, list[dict[str, Any]]]:
    """The source's key, its settings fingerprint and one ledger row per listed object, with
    the kind and settings a re-ingest reads it with (a bare key: the defaults)."""
    if isinstance(source, str):
        source_key, kind, settings = source, "fsspec", "{}"
        fingerprint: str | None = None
    else:
        source_key, kind, fingerprint = source.key, source.kind, source.fingerprint
        settings = orjson.dumps(
            {**source.spec.ledger_spec(), "settings": fingerprint}).decode()
    rows = [
        {
            "source": source_key,
            "source_kind": kind,
            "source_spec": settings,
            "path": ref.url,
            "version": ref.version,
            "size": ref.size,
            "modified_at": ref.modified_at,
            "format": ref.format,
            "compression": ref.compression,
        }
        for ref in refs
    ]
    return source_key, fingerprint, rows


_REGISTER = text(
    """
    insert into ingest_objects
      (source, path, version, size, modified_at, format, compression,
       source_kind, source_spec)
    values (:source, :path, :version, :size, :modified_at, :format, :compression,
            :source_kind, cast(:source_spec as jsonb))
    on conflict (source, path, version) do update
      set format = excluded.format, compression = excluded.compression,
          source_kind = excluded.source_kind,
          source_spec = excluded.source_spec
      where ingest_objects.status = 'failed'
        and not ingest_objects.source_spec ? 'replaces'
    """
)
_TO_LOAD = text(
    "select id from ingest_objects where source = :s and status <> 'ingested'"
    # a replay row is loaded only by a run with its settings (tasks/ingest/replay.py)
    " and (not source_spec ? 'replaces'"
    "      or source_spec->>'settings' = cast(:fp as text))"
    " order by path, version, id"
)
_CLAIM_LISTED = text(
    "update ingest_objects set claimed_by = :run, claimed_at = now()"
    " where id = any(cast(:ids as bigint[])) and status <> 'ingested'"
)


def ledger_spec(engine: Engine, object_url: str) -> dict[str, object] | None:
    """How the object was last read (kind, mapping, format, options), from the ledger."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select source_kind, source_spec from ingest_objects where path = :p"
                " order by id desc limit 1"
            ),
            {"p": object_url},
        ).first()
    if row is None:
        return None
    recorded = {k: v for k, v in row.source_spec.items()
                if k not in ("settings", "replaces", "replay_by")}
    return {**recorded, "kind": row.source_kind}


def requeue(engine: Engine, source_key: str) -> int:
    """Mark a source's objects to be read again (dedup keeps their events once)."""
    with engine.begin() as conn:
        result = conn.execute(
            text("update ingest_objects set status = 'pending' where source = :s"),
            {"s": source_key},
        )
        return result.rowcount or 0


# An object accepted settles the rejects of the earlier readings of the same path in its
# source: an earlier version (a half-written object read mid-write: its truncated record) is
# ``resolved`` by the later one, a replayed reading ``replaced`` by the replay
# (tasks/ingest/replay.py). The new reading keeps its own rejects, open.
_RESOLVE_EARLIER = text(
    """
    update rejected_rows r
    set status = case when n.source_spec ? 'replaces' then 'replaced' else 'resolved' end
    from ingest_objects n, ingest_objects o
    where n.id = :id and o.source = n.source and o.path = n.path and o.id < n.id
      and r.object_id = o.id and r.status in ('open', 'exported')
    """
)

# The archive horizon (tasks/archive/events.py): events before it are refused as archived_period.
_HORIZON = text("select max(before) from event_archives")

_CLAIM = text(
    """
    select id, path, version, size, modified_at, format, compression, discovered_at,
           source_spec
    from ingest_objects
    where id = :id and status <> 'ingested'
    for update skip locked
    """
)


def ingest_object(
    engine: Engine,
    source: Source,
    object_id: int,
    run_id: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    after: Sequence[int] = (),
    order_timeout: float = DEFAULT_ORDER_TIMEOUT,
) -> ObjectResult:
    """Load one object: claim, read, validate, COPY, dedup, ledger, all in one transaction.

    ``after``: the objects listed before this one in the run; its events merge only once those
    have committed (or ``order_timeout`` seconds passed: then the order is logged as not
    guaranteed, and conflicts are still detected and reported).
    """
    started = time.perf_counter()
    with engine.connect() as conn:
        with conn.begin():
            claimed = conn.execute(_CLAIM, {"id": object_id}).mappings().first()
            if claimed is None:
                return ObjectResult(object_id, "", "skipped")
            failpoint("ingest.after_claim")
            ref = ObjectRef(
                url=claimed["path"],
                version=claimed["version"],
                size=claimed["size"],
                modified_at=claimed["modified_at"],
                format=claimed["format"],
                compression=claimed["compression"],
            )
            bounds = TimeBounds(written_at=ref.modified_at or claimed["discovered_at"],
                                archived_before=conn.execute(_HORIZON).scalar())
            result = ObjectResult(object_id, ref.url, "ingested", bytes=ref.size or 0)
            savepoint = conn.begin_nested()
            try:
                _load(conn, source, ref, object_id, bounds, chunk_rows, result,
                      lambda: wait_for_predecessors(engine, after, run_id, order_timeout),
                      rank=len(after),
                      replay=claimed["source_spec"] if "replaces" in (
                          claimed["source_spec"] or {}) else None)
                savepoint.commit()
            except Exception as exc:
                if _is_connection_problem(exc):
                    raise
                savepoint.rollback()
                result = ObjectResult(
                    object_id, ref.url, "failed", bytes=ref.size or 0, error=_describe(exc)
                )
            result.seconds = time.perf_counter() - started
            failpoint("ingest.before_ledger")
            _record(conn, result, run_id)
            if result.status == "ingested":
                conn.execute(_RESOLVE_EARLIER, {"id": object_id})
            _record_mapping_report(conn, "ingest_objects", object_id,
                                   result.unmapped_usage_fields, result.paths_never_matched)
            failpoint("ingest.before_commit")
    with _COMMITTED:  # wakes the objects of this process that wait for this one
        _COMMITTED.notify_all()
    failpoint("ingest.after_commit")
    return result


def drain(
    engine: Engine, source: Source, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> list[ObjectResult]:
    """One worker's share of a source: list it, then load every object not yet ingested that
    no other worker holds.

    Any number of workers (processes, machines, Prefect workers on one pool) may drain the same
    source at once: each object is claimed with ``FOR UPDATE SKIP LOCKED`` in the transaction
    that loads it, so another worker's object comes back ``skipped`` and is loaded once. Each
    object still merges after the ones listed before it (whoever loads them), so which copy of
    an event is kept does not depend on which worker was faster.
    """
    ids = register_objects(engine, source, source.list())
    return [
        ingest_object(engine, source, object_id, chunk_rows=chunk_rows, after=ids[:index])
        for index, object_id in enumerate(ids)
    ]


def _is_connection_problem(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError)
    return isinstance(exc, psycopg.OperationalError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ObjectUnreadable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:2000]


def _record(conn: Connection, result: ObjectResult, run_id: int | None) -> None:
    conn.execute(
        text(
            """
            update ingest_objects set
              status = :status, error = :error, attempts = attempts + 1, rows = :rows,
              accepted = :accepted, duplicates = :duplicates, rejected = :rejected,
              unbillable = :unbillable, conflicts = :conflicts, run_id = :run_id,
              seconds = :seconds, records = :records, records_emitted = :records_emitted,
              records_empty = :records_empty, events = :events,
              ingested_at = case when :status = 'ingested' then now() end
            where id = :object_id
            """
        ),
        {**result.as_dict(), "run_id": run_id, "seconds": round(result.seconds, 3)},
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_STAGE = """
create temp table tf_stage (
  row_number bigint not null,
  sub_index integer not null,
  transaction_id text not null,
  external_subscription_id text not null,
  code text not null,
  ts timestamptz not null,
  properties jsonb not null,
  precise numeric,
  ts_given boolean not null
) on commit drop
"""

# One statement per object: insert in row order (first copy wins), then count what landed and
# what of it no subscription/charge will bill (stored all the same, reported). The unbillable
# count is a NOT EXISTS in WHERE, which PostgreSQL turns into one hash anti join over the
# billable (subscription, metric) pairs; as a FILTER clause it stayed a subplan run once per
# inserted row (docs/scaling.md section 1). ``{on_conflict}``: see ``_merge``.
_MERGE_SQL = """
    with ins as (
      insert into events (external_subscription_id, transaction_id, code, "timestamp",
                          properties, precise_total_amount_cents, object_id, row_number,
                          sub_index)
      select external_subscription_id, transaction_id, code, ts, properties, precise,
             :object_id, row_number, sub_index
      from tf_stage order by row_number, sub_index
      {on_conflict}
      returning external_subscription_id, code, "timestamp"
    )
    select (select count(*) from ins) as accepted,
           (select count(*) from ins
            where not exists (
              -- one row per subscription row: a plan change adds one with the same
              -- external_id, living from started_at (models/lifecycle.py)
              select 1
              from subscriptions s
              join charges c on c.plan_id = s.plan_id and c.effective_to is null
              join billable_metrics m on m.id = c.billable_metric_id
              where {billing_row}
                and s.external_id = ins.external_subscription_id and m.code = ins.code
                and {life_holds})) as unbillable
    """
# which subscription row bills an event: models/lifecycle.py
_BILLS = {"billing_row": BILLING_ROW_SQL, "life_holds": life_holds_sql('ins."timestamp"')}
_MERGE = text(_MERGE_SQL.format(
    on_conflict="on conflict (external_subscription_id, transaction_id) do nothing", **_BILLS))
_MERGE_NEW = text(_MERGE_SQL.format(on_conflict="", **_BILLS))
_UNIQUE_VIOLATION = "23505"

# Per merge transaction: JIT compiling the statement above cost more than it saved per object
# (docs/scaling.md §6; its row estimate crosses jit_above_cost, and nothing in it is worth
# compiling: the time is the index insert), and the in-order sort of a large object spilled to
# disk at the default work_mem.
_MERGE_SETTINGS = text("select set_config('jit', 'off', true),"
                       " set_config('work_mem', '64MB', true)")

# Copies that did not land (the stored event of their key came from another row) and differ from
# it. Only run when some staged row did not land, which is rare: the common, duplicate-free
# object pays nothing for conflict detection. A timestamp counts only when this copy gave one:
# a missing timestamp defaults to the object's write time, which differs between two objects
# carrying the same event.
_CONFLICTS = text(
    """
    select s.row_number, s.sub_index, s.transaction_id, s.external_subscription_id, s.code, s.ts,
           s.ts_given, s.properties::text as properties, s.precise,
           e.properties::text as kept_properties,
           e.row_number as kept_row, e.sub_index as kept_sub, o.path as kept_path,
           e.code <> s.code as code_differs,
           e.properties <> s.properties as properties_differ,
           e.precise_total_amount_cents is distinct from s.precise as precise_differs,
           s.ts_given and e."timestamp" <> s.ts as timestamp_differs
    from tf_stage s
    join events e
      on e.external_subscription_id = s.external_subscription_id
     and e.transaction_id = s.transaction_id
    join ingest_objects o on o.id = e.object_id
    where not (e.object_id = :object_id and e.row_number = s.row_number
               and e.sub_index = s.sub_index)
      and (e.code <> s.code or e.properties <> s.properties
           or e.precise_total_amount_cents is distinct from s.precise
           or (s.ts_given and e."timestamp" <> s.ts))
    order by s.row_number, s.sub_index
    """
)

_ORDER_POLL_SECONDS = 0.05
# Signalled after each object's transaction ends in this process, so a waiting object checks
# again at once instead of at its next poll (the merge order is the run's critical path). The
# database stays the only judge: a signal missed, or a predecessor in another process, costs
# one poll interval at most.
_COMMITTED = threading.Condition()
_PENDING_BEFORE = text(
    """
    select count(*) from ingest_objects
    where id = any(cast(:ids as bigint[])) and status <> 'ingested'
      and (case when cast(:run_id as bigint) is null then status = 'pending'
                else run_id is distinct from cast(:run_id as bigint) end)
    """
)


def wait_for_predecessors(
    engine: Engine, after: Sequence[int], run_id: int | None, timeout: float
) -> bool:
    """Wait until the objects before this one in the run have committed (ingested, or failed
    in this run). Polls on its own connection: the caller's transaction holds only its own
    object, which no predecessor needs, so waiting cannot deadlock. True when the order held."""
    if not after:
        return True
    deadline = time.monotonic() + timeout
    params = {"ids": list(after), "run_id": run_id}
    while True:
        with engine.connect() as conn:
            if conn.execute(_PENDING_BEFORE, params).scalar_one() == 0:
                return True
        if time.monotonic() >= deadline:
            _log.warning(
                "objects %s did not finish within %.0f s; loading without waiting (which copy "
                "of a conflicting duplicate is kept is then not guaranteed)", list(after), timeout
            )
            return False
        with _COMMITTED:
            _COMMITTED.wait(_ORDER_POLL_SECONDS)


def _load(
    conn: Connection,
    source: Source,
    ref: ObjectRef,
    object_id: int,
    bounds: TimeBounds,
    chunk_rows: int,
    result: ObjectResult,
    wait_turn: Callable[[], object] = lambda: None,
    rank: int = 0,
    replay: dict[str, Any] | None = None,
) -> None:
    """Stage every valid row (COPY, chunk by chunk, while the next chunk is read), keep the
    rejected ones, then -- in the run's order -- merge the staged rows into ``events`` once."""
    pg: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    conn.execute(text(_STAGE))
    staged_rows = _stage(pg, source, ref, object_id, bounds, chunk_rows, result, rank)
    if replay is not None:
        # a replay row: what each record gave before is replaced, voided (tasks/ingest/replay.py)
        wait_turn()
        done = reconcile(conn, object_id, replay, source.mapping.name)
        result.replay = done.as_dict()
        left = int(conn.execute(text("select count(*) from tf_stage")).scalar_one())
        result.duplicates += staged_rows - left  # unchanged and kept: the old events stand
        staged_rows = left
    if not staged_rows:
        return
    wait_turn()
    if getattr(source.mapping, "request_identity", False):
        # one LLM request billed once across mappings (tasks/ingest/requests.py)
        withheld = withhold_repeated_requests(conn, object_id, source.mapping.name)
        if withheld.conflicts:
            _copy_rejected(pg, object_id, withheld.conflicts)
        result.conflicts += len(withheld.conflicts)
        result.duplicates += withheld.duplicates
        staged_rows -= withheld.events
        if not staged_rows:
            return
    _merge_staged(conn, pg, object_id, staged_rows, result)


def _stage(
    pg: psycopg.Connection,
    source: Source,
    ref: ObjectRef,
    object_id: int,
    bounds: TimeBounds,
    chunk_rows: int,
    result: ObjectResult,
    rank: int,
) -> int:
    """Read the object chunk by chunk (the next one read while this one is copied), COPY the
    valid rows into ``tf_stage``, keep the rejected ones and count every record; returns how
    many rows were staged."""
    staged_rows = 0
    # ``rank``: the object's place in its run; the earliest stages first (StagingTurns)
    with STAGING.turn(rank), fewer_gc_passes(), source.open(ref) as stream:
        failpoint("ingest.after_open")
        reader = READERS[ref.format]
        # plain Lago JSON Lines by column, the rest row by row (the same rows either way)
        chunks = (staged_jsonl(stream, chunk_rows, source, bounds) if columnar(source, reader)
                  else validated(reader(stream, chunk_rows), source, bounds))
        for staged, rejected in prefetch(chunks):
            _count_chunk(result, staged, len(rejected))
            if staged.rows:
                with pg.cursor() as cur:
                    with cur.copy(
                        "copy tf_stage (row_number, sub_index, transaction_id,"
                        " external_subscription_id,"
                        " code, ts, properties, precise, ts_given) from stdin"
                    ) as copy:
                        copy.write(staged.data)
                staged_rows += staged.rows
                failpoint("ingest.after_copy")
            if rejected:
                _copy_rejected(pg, object_id, rejected)
                result.rejected += len(rejected)
                failpoint("ingest.after_rejects")
    return staged_rows


def _count_chunk(result: ObjectResult, staged: Staged, rejected: int) -> None:
    """One chunk's record accounting (records = emitted + rejected + empty, events apart:
    docs/data-quality.md), its unknown usage fields and the mapping paths never matched."""
    result.rows += staged.rows + rejected
    result.records += staged.records
    result.records_empty += staged.empty
    result.records_emitted += staged.records - staged.empty - rejected
    result.events += staged.rows
    for name, count in staged.unmapped.items():
        unmapped = result.unmapped_usage_fields
        unmapped[name] = unmapped.get(name, 0) + count
    if staged.unmatched is not None:
        result.paths_never_matched = sorted(staged.unmatched)


def _merge_staged(
    conn: Connection, pg: psycopg.Connection, object_id: int, staged_rows: int,
    result: ObjectResult,
) -> None:
    """Merge the staged rows into ``events`` and tell each row that did not land: a later copy
    that differs is a conflict (kept as a rejected row), the same by value a duplicate."""
    conn.execute(_MERGE_SETTINGS)
    counts = _merge(conn, object_id)
    failpoint("ingest.after_merge")
    conflicts = [
        (row.row_number, conflict, staged_event_json(row), row.sub_index)
        for row in conn.execute(_CONFLICTS, {"object_id": object_id})
        if (conflict := _conflict(row)) is not None  # else the same by value: a duplicate
    ] if counts.accepted < staged_rows else []
    if conflicts:
        _copy_rejected(pg, object_id, conflicts)
    result.accepted += counts.accepted
    result.unbillable += counts.unbillable
    result.conflicts += len(conflicts)
    result.duplicates += staged_rows - counts.accepted - len(conflicts)


def _merge(conn: Connection, object_id: int) -> Any:
    """Merge the staged rows: first as a plain INSERT, falling back to ``ON CONFLICT DO
    NOTHING`` when some key is already stored.

    ``ON CONFLICT`` pays per row for a speculative insertion (an index probe before the heap
    insert, a second one with the insert, a record to confirm it): more than a plain insert
    (docs/scaling.md §6), and the merge is the one serial step of a run (docs/scaling.md section
    1). Most objects carry only new events, so the plain insert runs first under a savepoint; the
    unique index still refuses any stored key (or one repeated in the object), and then the
    savepoint is rolled back and the same rows merge with ``ON CONFLICT``. Either way the same
    rows land in the same order: the plain insert only succeeds when no row would conflict.
    A re-dropped object fails at its first row, so the fallback costs little; an object with a
    duplicate near its end pays for both statements.
    """
    params = {"object_id": object_id}
    try:
        with conn.begin_nested():
            return conn.execute(_MERGE_NEW, params).one()
    except sa_exc.IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
    return conn.execute(_MERGE, params).one()


def _conflict(row: Any) -> Rejection | None:
    """The rejection of a copy that differs from the stored one, naming what differs; None
    when it differs only in how its numbers are written (``"100"``, ``100``, ``100.0``: the
    same number, docs/architecture.md §7), which makes it a plain duplicate."""
    differs = [name for name, flag in (
        ("code", row.code_differs), ("precise_total_amount_cents", row.precise_differs),
        ("timestamp", row.timestamp_differs)) if flag]
    if row.properties_differ:
        kept, copy = loads_exact(row.kept_properties), loads_exact(row.properties)
        names = differing_properties(kept, copy)
        if names:
            shown = "; ".join(
                f"{name}: {_shown(kept, name)} kept, {_shown(copy, name)} in this copy"
                for name in names[:_NAMED])
            more = f"; and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
            differs.insert(1 if row.code_differs else 0, f"properties ({shown}{more})")
    if not differs:
        return None
    return Rejection(
        Reason.CONFLICTING_DUPLICATE,
        None,
        f"external_subscription_id {row.external_subscription_id!r} and transaction_id "
        f"{row.transaction_id!r} were already stored from row {_row_text(row)} of "
        f"{row.kept_path} (kept) with another {', '.join(differs)}; this copy is not billed",
    )


_NAMED = 5  # properties a conflict's message names, at most


def _shown(properties: dict[str, Any], name: str) -> str:
    return quoted_value(properties[name]) if name in properties else "missing"


def _row_text(row: Any) -> str:
    return f"{row.kept_row}" if not row.kept_sub else f"{row.kept_row}.{row.kept_sub}"




def _copy_rejected(
    pg: psycopg.Connection, object_id: int, rejected: Sequence[RejectedRow]
) -> None:
    with pg.cursor() as cur:
        with cur.copy(
            "copy rejected_rows (object_id, row_number, sub_index, field, reason, message, raw)"
            " from stdin"
        ) as copy:
            for row_number, rejection, raw, *sub in rejected:
                copy.write_row(
                    (object_id, row_number, sub[0] if sub else 0, rejection.field,
                     str(rejection.reason), rejection.message, raw)
                )


# The per-row work lives in tasks/ingest/staging.py; the old private names stay importable.
_fewer_gc_passes = fewer_gc_passes
_validated = validated
_prefetch = prefetch


# --------------------------------------------------------------------------------------------
# Prefect tasks (thin: the functions above do the work and are tested without Prefect)
# --------------------------------------------------------------------------------------------

INGEST_RETRIES = transient_retries(retries=4, backoff_factor=1)


@task(name="list-new-objects", **INGEST_RETRIES)
def list_new_objects(spec: SourceSpec, run_id: int | None = None) -> list[int]:
    """List the source and return the ledger ids of objects not yet ingested (claimed by
    ``run_id``)."""
    source = build_source(spec)
    return register_objects(billing_engine(), source, source.list(), run_id)


@task(name="ingest-object", task_run_name="ingest-object-{object_id}", **INGEST_RETRIES)
def ingest_object_task(
    spec: SourceSpec, object_id: int, run_id: int, chunk_rows: int = DEFAULT_CHUNK_ROWS,
    after: list[int] | None = None,
) -> ObjectResult:
    """``after``: the objects before this one in the run's load order (merged first)."""
    return ingest_object(billing_engine(), build_source(spec), object_id, run_id, chunk_rows,
                         after=after or ())
