"""Rejected rows: list them, export them for fixing, see what was fixed.

A rejected row is kept with its raw text so it can be corrected and dropped into the bucket
again; the fixed copy is then an ordinary new event (dedup keeps it once even if dropped twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text

_SELECT = """
    select r.id, o.path as object, r.row_number, r.field, r.reason, r.message, r.raw,
           r.status, r.created_at
    from rejected_rows r join ingest_objects o on o.id = r.object_id
    where (cast(:reason as text) is null or r.reason = :reason)
      and (cast(:object as text) is null or o.path like '%' || :object || '%')
      and (cast(:status as text) is null or r.status = :status)
    order by r.id
"""


def list_rejects(
    engine: Engine,
    reason: str | None = None,
    object_contains: str | None = None,
    status: str | None = "open",
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    sql = _SELECT + (" limit :limit" if limit else "")
    with engine.connect() as conn:
        rows = conn.execute(
            text(sql),
            {"reason": reason, "object": object_contains, "status": status, "limit": limit},
        )
        return [dict(row._mapping) for row in rows]


def iter_rejects(
    engine: Engine, reason: str | None = None, object_contains: str | None = None
) -> Iterator[dict[str, Any]]:
    """Stream every open rejected row (server-side cursor: any number of rows, flat memory)."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5_000).execute(
            text(_SELECT),
            {"reason": reason, "object": object_contains, "status": "open"},
        )
        for row in result:
            yield dict(row._mapping)


def count_by_reason(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select reason, count(*) from rejected_rows where status = 'open'"
                " group by reason order by 2 desc"
            )
        )
        return {reason: int(n) for reason, n in rows}


def mark_exported(engine: Engine, ids: list[int]) -> int:
    """Mark rows as exported for fixing so the open list shows only what is still untouched."""
    with engine.begin() as conn:
        result = conn.execute(
            text("update rejected_rows set status = 'exported' where id = any(:ids)"),
            {"ids": ids},
        )
        return result.rowcount or 0


# Unbillable events are not rejected rows: they are stored and counted at rating time
# (models/rating/unbillable.py). Listed here as of each subscription period's latest usage
# snapshot, the one ``usage_amounts`` names: one row per period read, not per event.
_UNBILLABLE = text(
    """
    select a.external_subscription_id as subscription, a.period_start, s.as_of,
           u ->> 'billable_metric_code' as metric, u ->> 'reason' as reason,
           cast(u ->> 'count' as bigint) as count,
           coalesce(array(select jsonb_array_elements_text(u -> 'sample_transaction_ids')),
                    '{}') as sample_transaction_ids
    from usage_amounts a
    join usage_snapshots s on (s.id, s.as_of) = (a.snapshot_id, a.snapshot_as_of)
    cross join lateral jsonb_array_elements(s.usage -> 'tallyflow_unbillable') as u
    where s.usage ? 'tallyflow_unbillable'
      and (cast(:sub as text) is null or a.external_subscription_id = :sub)
      and (cast(:reason as text) is null or u ->> 'reason' = :reason)
    order by a.external_subscription_id, a.period_start desc, metric, reason
    limit :limit
    """
)


def list_unbillable(
    engine: Engine, subscription: str | None = None, reason: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Per subscription period, metric and reason: how many events bill nothing and a few of
    their transaction ids (docs/data-quality.md, "Unbillable events")."""
    with engine.connect() as conn:
        rows = conn.execute(_UNBILLABLE, {"sub": subscription, "reason": reason,
                                          "limit": limit})
        return [dict(row._mapping) for row in rows]


def count_unbillable(engine: Engine) -> dict[str, int]:
    """Events billing nothing per reason, over every period's latest usage snapshot."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """
            select u ->> 'reason', sum(cast(u ->> 'count' as bigint))
            from usage_amounts a
            join usage_snapshots s on (s.id, s.as_of) = (a.snapshot_id, a.snapshot_as_of)
            cross join lateral jsonb_array_elements(s.usage -> 'tallyflow_unbillable') as u
            where s.usage ? 'tallyflow_unbillable'
            group by 1 order by 1
            """))
        return {reason: int(n) for reason, n in rows}
