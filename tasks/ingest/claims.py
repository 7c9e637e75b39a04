"""Dead runs' claims: who holds the ingest watermark, and reclaiming what a dead run left.

An ingest run claims the objects it lists (``ingest_objects.claimed_by``, in the transaction
that registers them, tasks/ingest/load.py). If the run dies (killed, cancelled, crashed) its
objects stay ``pending``, and the oldest object not loaded caps the ingest watermark
(tasks/invoicing/watermark.py): no invoice would be finalized again, for any customer. Only
the next run of the same source would load them, and a one-off ingest's source has no next run.

Whether a claimer is alive is the run history's judgement (tasks/runs/history.py: a run ends
completed, failed, cancelled, or crashed once its heartbeat stops), the same one ``tallyflow
runs`` shows; heartbeats work through a connection pooler, where session-held advisory locks
would not. A pending object is a **dead claim** unless its claimer's ingest run, and the flow
run behind it, are running in the run history: the claimer ended, or there is none (objects
registered before claims were recorded, by ``drain`` or by the API's own loader outside any
run). A live claimer's objects are never taken from it. Reclaiming is safe even against a claimer
judged dead too early: each object is still loaded under its row lock (``FOR UPDATE SKIP
LOCKED``) and marked ingested in the same transaction, so it is loaded once whoever gets it
(docs/architecture.md §3, invariant 2).

The billing cycle reclaims every hour, before its usage snapshot, so a dead run holds billing
back one hour at most; it announces each dead claim that held the watermark once, with the
Prefect event ``tallyflow.ingest.watermark-held`` (deployments/automations.yaml notifies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypedDict

from prefect import runtime, task
from prefect.events import emit_event
from sqlalchemy import Engine, text

from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.results import PrefectEvent
from tallyflow.models.lago.summaries import ReclaimSummary
from tallyflow.tasks.ingest.load import ObjectResult, _record, finish_run, ingest_object, start_run
from tallyflow.tasks.ingest.sources import SourceSpec, build_source
from tallyflow.tasks.invoicing import ingest_watermark
from tallyflow.tasks.runs import reap_stale, transient_retries

HELD_EVENT: Final = "tallyflow.ingest.watermark-held"
RECLAIM_SOURCE: Final = "(reclaim)"  # ingest_runs.source of a reclaim: it has no one source
# Objects one reclaim loads at most; the rest wait for the next hour (each is listed).
RECLAIM_LIMIT: Final = 1000


class HolderFields(TypedDict):
    """``WatermarkHolder.as_dict()``: moments as datetimes (``tallyflow ops`` and billing
    health write them as text; a reclaim's ``held_by``)."""

    object_id: int
    object: str
    source: str
    status: str
    since: datetime
    claimed_at: datetime | None
    ingest_run: int | None
    flow_run_id: str | None
    run_status: str | None
    error: str | None
    dead: bool
    holds: bool
    watermark: datetime | None


@dataclass
class WatermarkHolder:
    """The oldest object not loaded: it caps the ingest watermark, since ``since``."""

    object_id: int
    object: str
    source: str
    status: str  # pending | failed
    since: datetime  # when it was listed: the watermark stops there
    claimed_at: datetime | None
    ingest_run: int | None  # the claimer (ingest_runs.id)
    flow_run_id: str | None
    run_status: str | None  # the claimer's: running, completed, failed, cancelled, crashed
    error: str | None
    dead: bool  # pending, and no live run will load it (a dead claim)
    holds: bool  # it is what stops the watermark (not the last listing)
    watermark: datetime | None

    def as_dict(self) -> HolderFields:
        return {"object_id": self.object_id, "object": self.object, "source": self.source,
                "status": self.status, "since": self.since, "claimed_at": self.claimed_at,
                "ingest_run": self.ingest_run, "flow_run_id": self.flow_run_id,
                "run_status": self.run_status, "error": self.error, "dead": self.dead,
                "holds": self.holds, "watermark": self.watermark}

    def describe(self) -> str:
        run = (f"ingest run {self.ingest_run} (flow run {self.flow_run_id or '-'},"
               f" {self.run_status})" if self.ingest_run is not None else "no run")
        state = ("a dead run's claim: the next billing cycle reclaims it" if self.dead
                 else "failed: the next run of its source retries it" if self.status == "failed"
                 else "being loaded")
        return (f"{self.object} ({self.source}), waiting since {self.since:%Y-%m-%d %H:%M:%S %Z},"
                f" claimed by {run}: {state}")


# A claim is live while its ingest run and that run's flow run are both running in the run
# history (an ingest run without a flow run, or whose flow run is not recorded, has nobody to
# keep it alive); every other pending object is a dead claim (see the module's docstring).
_LIVE = """
    exists (select 1 from ingest_runs r join run_history h on h.flow_run_id = r.flow_run_id
            where r.id = o.claimed_by and r.status = 'running' and h.status = 'running')
"""
_HOLDER = text(
    f"""
    select o.id, o.path, o.source, o.status, o.discovered_at, o.claimed_at, o.error,
           o.claimed_by, r.flow_run_id, r.status as run_status, {_LIVE} as live
    from ingest_objects o left join ingest_runs r on r.id = o.claimed_by
    where o.status <> 'ingested'
    order by o.discovered_at, o.id
    limit 1
    """  # noqa: S608 - fixed text
)
_DEAD_CLAIMS = text(
    f"""
    select o.id, o.path, o.source_kind, o.source_spec from ingest_objects o
    where o.status = 'pending' and not {_LIVE}
    order by o.path, o.version, o.id limit :limit
    """  # noqa: S608 - fixed text
)


def watermark_holder(engine: Engine, reap: bool = True) -> WatermarkHolder | None:
    """The object that holds the ingest watermark back (which object, since when, which run),
    None when every listed object is loaded. ``reap``: mark dead runs crashed first, so a
    killed claimer is seen as dead (the health view and ``tallyflow runs --objects`` call
    this)."""
    if reap:
        reap_stale(engine)
    with engine.connect() as conn:
        row = conn.execute(_HOLDER).first()
        watermark = ingest_watermark(conn)
    if row is None:
        return None
    dead = row.status == "pending" and not row.live
    return WatermarkHolder(
        object_id=int(row.id), object=row.path, source=row.source, status=row.status,
        since=row.discovered_at, claimed_at=row.claimed_at,
        ingest_run=None if row.claimed_by is None else int(row.claimed_by),
        flow_run_id=row.flow_run_id, run_status=row.run_status, error=row.error, dead=dead,
        holds=watermark is not None and watermark == row.discovered_at, watermark=watermark,
    )


def reclaim_dead_claims(
    engine: Engine, flow_run_id: str | None = None, limit: int = RECLAIM_LIMIT
) -> ReclaimSummary:
    """Load every object a dead run left pending, each with the source that listed it (kind,
    mapping, format, options from the ledger, as a re-ingest does), under one ingest run that
    lists nothing. An object that cannot be read (or whose source can no longer be built) is
    recorded ``failed`` with its reason, like any failed object: nothing is lost."""
    reap_stale(engine)
    with engine.connect() as conn:
        rows = conn.execute(_DEAD_CLAIMS, {"limit": limit}).all()
    if not rows:
        return {"reclaimed": 0, "objects": []}
    started = time.perf_counter()
    run_id = start_run(engine, RECLAIM_SOURCE, flow_run_id)  # lists nothing: never `listed`
    with engine.begin() as conn:  # the reclaim is now their (live) claimer
        conn.execute(text("update ingest_objects set claimed_by = :run, claimed_at = now()"
                          " where id = any(cast(:ids as bigint[])) and status = 'pending'"),
                     {"run": run_id, "ids": [r.id for r in rows]})
    results = [_reclaim(engine, row, run_id) for row in rows]
    summary = finish_run(engine, run_id, results, time.perf_counter() - started)
    return {**summary, "reclaimed": len(results),
            "objects": [{"object": r.url, "status": r.status, "accepted": r.accepted,
                         "error": r.error} for r in results if r.status != "skipped"]}


def _reclaim(engine: Engine, row: Any, run_id: int) -> ObjectResult:
    try:
        source = build_source(SourceSpec.model_validate(
            {**row.source_spec, "kind": row.source_kind, "url": row.path, "pattern": None}))
    except Exception as exc:  # a plugin or mapping file gone: the object fails, visibly
        failed = ObjectResult(int(row.id), row.path, "failed",
                              error=f"cannot build its source: {exc}"[:2000])
        with engine.begin() as conn:
            _record(conn, failed, run_id)
        return failed
    return ingest_object(engine, source, int(row.id), run_id)


def held_event(holder: WatermarkHolder, outcome: str | None) -> PrefectEvent:
    """The Prefect event announcing that a dead run's claim held the watermark."""
    return {
        "event": HELD_EVENT,
        "resource": {"prefect.resource.id": f"tallyflow.ingest-object.{holder.object_id}",
                     "prefect.resource.name": holder.object,
                     "tallyflow.source": holder.source},
        "payload": {"object": holder.object, "source": holder.source,
                    "since": holder.since.isoformat(),
                    "watermark": holder.watermark.isoformat() if holder.watermark else None,
                    "ingest_run": holder.ingest_run, "flow_run_id": holder.flow_run_id,
                    "run_status": holder.run_status, "reclaimed": outcome},
    }


@task(name="reclaim-dead-claims", **transient_retries(retries=3, backoff_factor=1))
def reclaim_dead_claims_task() -> ReclaimSummary:
    """Reclaim dead runs' objects; announce (once: after it the claim is no longer dead) a
    dead claim that was holding the watermark back."""
    engine = billing_engine()
    holder = watermark_holder(engine)
    summary = reclaim_dead_claims(engine, str(runtime.flow_run.id or "") or None)
    if holder is not None and holder.dead:
        outcome = next((o["status"] for o in summary["objects"]
                        if o["object"] == holder.object), None)
        emit_event(**held_event(holder, outcome))
        summary["held_by"] = {**holder.as_dict(), "reclaimed": outcome}
    return summary
