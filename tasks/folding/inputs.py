"""What a fold reads: metrics (filters, group keys) and subscriptions (periods)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, text

from tallyflow.models.exact_json import loads_exact
from tallyflow.models.lifecycle import (
    BILLING_ROW_SQL,
    ROW_ENDS_SQL,
    ROW_STARTS_SQL,
    row_in_force,
)
from tallyflow.models.number_rule import BOUNDED_PLAIN_SQL
from tallyflow.models.rating import (
    AggregationType,
    MetricFilter,
)
from tallyflow.models.rating.aggregation import definition_of
from tallyflow.models.rating.periods import CHARGES_INTERVAL_SQL
from tallyflow.models.rating.pricing import MetricInfo, SubscriptionInfo

# Folds share this advisory lock; a rebuild takes it exclusively so no fold interleaves.
FOLD_LOCK: Final = 7_305_040


DEFAULT_FOLD_OBJECTS: Final = 200


# What the fold reads as a number: a plain decimal inside the number rule's bound
# (docs/architecture.md §7), as models.rating.money.parse_plain_decimal
PLAIN_DECIMAL_SQL: Final = BOUNDED_PLAIN_SQL


def keeps_days(metric: MetricInfo) -> bool:
    """Recurring sums and unique counts keep per-day state (sums: ``day_totals``; unique
    counts: ``days`` in their jsonb state): only they can be prorated
    (models/catalog/prorated.py), so no other state pays for it."""
    return metric.recurring and definition_of(metric.aggregation_type).prorates


_METRICS = text(
    """
    select m.id, m.code, m.name, m.aggregation_type, m.field_name, m.recurring,
           m.rounding_function, m.rounding_precision, m.updated_at,
           coalesce((select jsonb_agg(jsonb_build_object('key', f.key, 'values', f.values)
                                      order by f.key)
                     from billable_metric_filters f where f.billable_metric_id = m.id),
                    '[]'::jsonb)::text as filters,
           coalesce((select array_agg(distinct k order by k)
                     from charges c, unnest(c.pricing_group_keys) k
                     where c.billable_metric_id = m.id and c.effective_to is null), '{}')
             as group_keys
    from billable_metrics m
    """
)


def load_metrics(conn: Connection) -> dict[int, MetricInfo]:
    """Every billable metric by id (a handful of rows; read once per transaction)."""
    metrics: dict[int, MetricInfo] = {}
    for row in conn.execute(_METRICS).mappings():
        filters = tuple(
            MetricFilter(f["key"], tuple(f["values"])) for f in loads_exact(row["filters"])
        )
        metrics[row["id"]] = MetricInfo(
            id=row["id"],
            code=row["code"],
            name=row["name"],
            aggregation_type=AggregationType(row["aggregation_type"]),
            field_name=row["field_name"],
            recurring=row["recurring"],
            rounding_function=row["rounding_function"],
            rounding_precision=row["rounding_precision"],
            filters=filters,
            group_keys=tuple(row["group_keys"]),
            updated_at=row["updated_at"],
        )
    return metrics


_SUBSCRIPTIONS = f"""
    select s.id, s.external_id, s.plan_id,
           -- the charges' periods: monthly for a plan billing its charges monthly
           {CHARGES_INTERVAL_SQL} as interval, s.billing_time,
           -- a plan change's row lives from started_at, its periods anchored on
           -- subscription_at; it ends at the earlier of a termination and the catalog's
           -- ending_at (models/lifecycle.py)
           {ROW_STARTS_SQL} as subscription_at,
           {ROW_ENDS_SQL} as terminated_at, c.timezone,
           coalesce(c.currency, p.amount_currency) as currency,
           greatest(s.updated_at, p.updated_at, c.updated_at, pm.metrics_at) as catalog_at,
           s.subscription_at as anchor_at
    from subscriptions s
    join plans p on p.id = s.plan_id
    join customers c on c.id = s.customer_id
    left join (select ch.plan_id, max(m.updated_at) as metrics_at
               from charges ch join billable_metrics m on m.id = ch.billable_metric_id
               where ch.effective_to is null
               group by ch.plan_id) pm on pm.plan_id = p.id
    where {BILLING_ROW_SQL}  -- canceled before it started: never bills
"""  # noqa: S608 - fixed text


def in_force(rows: Sequence[SubscriptionInfo], at: datetime) -> SubscriptionInfo | None:
    """The row of one external id that bills ``at`` (``models.lifecycle.row_in_force``; here
    ``terminated_at`` is already the effective end)."""
    return row_in_force(rows, at, _life)


def _life(row: SubscriptionInfo) -> tuple[datetime, datetime | None]:
    return row.subscription_at, row.terminated_at


def load_subscription_rows(
    conn: Connection, external_ids: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
) -> list[SubscriptionInfo]:
    """Every subscription row, oldest first per external id (a plan change adds a row with
    the same external id; their lives do not overlap, models/lifecycle.py)."""
    order = f" order by s.external_id, {ROW_STARTS_SQL}, s.id"
    if external_ids is not None:
        rows = conn.execute(
            text(_SUBSCRIPTIONS + " and s.external_id = any(cast(:ids as text[]))" + order),
            {"ids": list(external_ids)},
        )
    elif ids is not None:
        rows = conn.execute(
            text(_SUBSCRIPTIONS + " and s.id = any(cast(:ids as bigint[]))" + order),
            {"ids": list(ids)},
        )
    else:
        rows = conn.execute(text(_SUBSCRIPTIONS + order))
    # zip with the keys once: a Row's mapping view costs more than the dataclass itself
    keys = list(rows.keys())
    return [SubscriptionInfo(**dict(zip(keys, row, strict=True))) for row in rows]


def archive_horizon(conn: Connection) -> datetime | None:
    """Events before this moment were archived (tasks/archive/events.py); None: none were. Rebuilds
    keep the usage state of periods before it (their raw events left the table)."""
    value: datetime | None = conn.execute(
        text("select max(before) from event_archives")).scalar()
    return value
