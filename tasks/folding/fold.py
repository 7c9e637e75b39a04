"""Usage state: fold ingested objects into per-period aggregation state, exactly once.

Why fold by object: the ingest flow commits one object per transaction, so an object is the
natural unit of "new work". A fold transaction claims objects that are ingested and not yet
folded (``FOR UPDATE SKIP LOCKED``: concurrent snapshot runs take disjoint sets and never wait
on each other or on ingest workers), folds their events into ``usage_states`` with one
``INSERT ... SELECT ... GROUP BY ... ON CONFLICT`` per metric, and marks the objects folded in
the same transaction. A crash rolls all of it back; nothing is folded twice or lost. Late
events simply land in the state of their own period.

State key: (subscription, metric, period start, metric filter values, pricing group values).
Charge filters are applied later (``models.rating.bucket_states``), so a charge-filter change
re-buckets existing state; a *metric* filter, group-key, interval or timezone change needs
``rebuild_states`` (``tallyflow usage rebuild --metric CODE``), which recomputes the state from
the raw events of every folded object under an exclusive advisory lock.

Events that no subscription/metric/period bills are never folded; each fold records how many
events its objects held and how many it folded (``usage_folds``) so the difference stays
reportable next to the ingest ledger's ``unbillable`` counts.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from tallyflow.infra.failpoints import failpoint
from tallyflow.tasks.folding.inputs import (
    DEFAULT_FOLD_OBJECTS,
    FOLD_LOCK,
    archive_horizon,
    load_metrics,
)
from tallyflow.tasks.folding.sql import FoldSummary, _mark, fold_objects

_CLAIM = text(
    """
    select id from ingest_objects
    where status = 'ingested' and folded_at is null
    order by id
    limit :limit
    for update skip locked
    """
)


def fold_pending(engine: Engine, max_objects: int = DEFAULT_FOLD_OBJECTS) -> FoldSummary:
    """Fold every ingested, not yet folded object; one transaction per batch of objects.

    Safe to run concurrently (claims skip locked rows) and to retry (a failed batch rolled
    back entirely and is claimed again).
    """
    summary = FoldSummary()
    summarize_new_events(engine)
    while True:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock_shared(:k)"), {"k": FOLD_LOCK})
            _tune(conn)
            ids = [int(i) for i in conn.execute(_CLAIM, {"limit": max_objects}).scalars()]
            if not ids:
                return summary
            fold_id = _new_fold(conn, "fold", None)
            batch = fold_objects(conn, ids, fold_id)
            conn.execute(
                text(
                    "update ingest_objects set folded_at = now(), fold_id = :f"
                    " where id = any(cast(:ids as bigint[]))"
                ),
                {"f": fold_id, "ids": ids},
            )
            _finish_fold(conn, fold_id, len(ids), batch)
            failpoint("usage.before_fold_commit")
        summary.folds += 1
        summary.objects += len(ids)
        summary.events += batch.events
        summary.folded += batch.folded
        summary.subscriptions |= batch.subscriptions


def rebuild_states(
    engine: Engine, metric_code: str | None = None, chunk_objects: int = 500
) -> FoldSummary:
    """Recompute state from the raw events of every folded object (all metrics or one).

    Runs in one transaction holding the fold lock exclusively, so snapshots read either the
    old state or the new one, and no fold slips in between the delete and the refold.
    """
    summary = FoldSummary(folds=1)
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
        _tune(conn)
        metrics = load_metrics(conn)
        if metric_code is None:
            metric_ids = list(metrics)
        else:
            metric_ids = [m.id for m in metrics.values() if m.code == metric_code]
            if not metric_ids:
                raise ValueError(f"unknown billable metric {metric_code!r}")
        fold_id = _new_fold(conn, "rebuild", metric_code)
        horizon = archive_horizon(conn)
        cleared = conn.execute(
            text(
                "delete from usage_states where billable_metric_id = any(cast(:m as bigint[]))"
                " and (cast(:h as timestamptz) is null or period_start >= :h)"
                " returning subscription_id"
            ),
            {"m": metric_ids, "h": horizon},
        ).scalars()
        _mark(conn, set(cleared), fold_id)
        ids = [
            int(i)
            for i in conn.execute(
                text("select id from ingest_objects where folded_at is not null order by id")
            ).scalars()
        ]
        for start in range(0, len(ids), chunk_objects):
            chunk = ids[start : start + chunk_objects]
            batch = fold_objects(conn, chunk, fold_id, metric_ids, metrics, since=horizon)
            summary.objects += len(chunk)
            summary.events += batch.events
            summary.folded += batch.folded
            summary.subscriptions |= batch.subscriptions
        _finish_fold(conn, fold_id, summary.objects, summary)
    return summary


def rebuild_subscription(conn: Connection, subscription_id: int, external_id: str) -> int:
    """Recompute one subscription's usage state from its raw events, inside the caller's
    transaction (which must hold the fold lock exclusively: a termination or a plan change,
    tasks/subscriptions/lifecycle.py, rebuilds in the transaction that moves the dates);
    returns the events folded.

    Only the folded objects holding its events are read again, so the cost follows the
    subscription, not the whole history; objects not folded yet are folded by the next
    fold with the subscription's new dates.
    """
    _tune(conn)
    horizon = archive_horizon(conn)  # archived periods keep their state (tasks/archive/events.py)
    conn.execute(text("delete from usage_states where subscription_id = :id and"
                      " (cast(:h as timestamptz) is null or period_start >= :h)"),
                 {"id": subscription_id, "h": horizon})
    fold_id = _new_fold(conn, "rebuild", None)
    _mark(conn, [subscription_id], fold_id)
    objects = [int(i) for i in conn.execute(
        text(
            """
            select distinct e.object_id from events e
            join ingest_objects o on o.id = e.object_id and o.folded_at is not null
            where e.external_subscription_id = :x order by 1
            """
        ),
        {"x": external_id},
    ).scalars()]
    if not objects:
        return 0
    summary = fold_objects(conn, objects, fold_id, None, load_metrics(conn), {subscription_id},
                           since=horizon)
    return summary.folded


def _tune(conn: Connection) -> None:
    """Settings for the fold statements, local to the fold transaction.

    The new objects' ids are always beyond the column statistics, so the planner expects
    about one event and would pick a nested loop against the periods list, orders of magnitude
    slower than a hash join (docs/scaling.md §6). Grouping tens of thousands of keys wants more
    than the default work_mem to stay in memory.
    """
    conn.execute(text("set local enable_nestloop = off"))
    conn.execute(text("set local work_mem = '64MB'"))


def summarize_new_events(engine: Engine) -> bool:
    """Summarise the BRIN ranges of freshly inserted event pages before folding.

    An unsummarised BRIN range matches every query, so until autovacuum gets to it a burst
    of ingestion makes "events of these objects" read the whole table. Summarising costs
    what the new pages cost. Skipped (False) when autovacuum holds the table right now.
    """
    try:
        with engine.begin() as conn:
            conn.execute(text("set local lock_timeout = '2s'"))
            conn.execute(text("select brin_summarize_new_values('ix_events_object_brin')"))
        return True
    except OperationalError:
        return False


def _new_fold(conn: Connection, kind: str, metric_code: str | None) -> int:
    return int(
        conn.execute(
            text("insert into usage_folds (kind, metric_code) values (:k, :m) returning id"),
            {"k": kind, "m": metric_code},
        ).scalar_one()
    )


def _finish_fold(conn: Connection, fold_id: int, objects: int, summary: FoldSummary) -> None:
    conn.execute(
        text("update usage_folds set objects = :o, events = :e, folded = :f where id = :id"),
        {"o": objects, "e": summary.events, "f": summary.folded, "id": fold_id},
    )


