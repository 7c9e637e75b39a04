"""Reading state back as the pure states of ``tallyflow.models.rating``.

Including events ingested but not yet folded, for live usage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from tallyflow.models.rating import (
    AggregationType,
    AnyState,
    BillingPeriod,
    CountState,
    EventPoint,
    FilterKey,
    LatestState,
    MaxState,
    SumState,
    UniqueCountState,
    WeightedSumState,
    empty_state,
    metric_filter_key,
)
from tallyflow.models.rating.pricing import GroupValues, MetricInfo, StateKey, SubscriptionInfo
from tallyflow.tasks.folding.inputs import keeps_days, loads_exact


def filter_key_of(data: Mapping[str, str | None]) -> FilterKey:
    return tuple(sorted(data.items()))


def group_values_of(data: Mapping[str, str | None]) -> GroupValues:
    return tuple(sorted(data.items()))


def state_of_row(kind: AggregationType, row: Mapping[Any, Any]) -> AnyState:
    """The pure state a ``usage_states`` row stands for."""
    count, unbillable = int(row["events_count"]), int(row["unbillable_count"])
    if kind is AggregationType.COUNT:
        return CountState(count, unbillable)
    if kind is AggregationType.SUM:
        days = row.get("day_totals")
        if isinstance(days, str):
            days = loads_exact(days)
        return SumState(
            row["total"], count, unbillable, row["precise_total"],
            {d: Decimal(str(v)) for d, v in days.items()} if days else {},
        )
    if kind is AggregationType.MAX:
        return MaxState(row["maximum"], count, unbillable)
    if kind is AggregationType.LATEST:
        seq = row["latest_seq"]
        return LatestState(
            row["latest_value"],
            row["latest_ts"],
            None if seq is None else int(seq),
            count,
            unbillable,
        )
    if kind is AggregationType.WEIGHTED_SUM:
        return WeightedSumState(row["total"], row["moment"], count, unbillable)
    return UniqueCountState.from_json(loads_exact(row["state"]))


StoredStates = dict[int, dict[StateKey, AnyState]]
"""subscription_id -> state key -> state."""


_READ_STATES = text(
    """
    select s.subscription_id, s.billable_metric_id, s.period_start,
           s.filter_key::text as filter_key, s.group_key::text as group_key, s.events_count,
           s.unbillable_count, s.total, s.precise_total, s.moment, s.maximum, s.latest_value,
           s.latest_ts, s.latest_seq, s.state::text as state, s.day_totals::text as day_totals
    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as w(sid, ps)
    join usage_states s on s.subscription_id = w.sid
     and (s.period_start = w.ps
          or (s.billable_metric_id = any(cast(:rec as bigint[])) and s.period_start < w.ps))
    """
)

# With recurring metrics: a plan change's row also reads the recurring states of the rows it
# replaced (``previous_subscription_id``, transitively), their current period included. Lago
# aggregates a recurring metric over every event of the external subscription id with no lower
# bound, so units carry over an upgrade or downgrade as they carry over a period end.
_READ_STATES_WITH_LINEAGE = text(
    """
    with recursive line(sid, ps, member) as (
      select w.sid, w.ps, w.sid
      from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as w(sid, ps)
      union all
      select l.sid, l.ps, p.previous_subscription_id
      from line l join subscriptions p on p.id = l.member
      where p.previous_subscription_id is not null
    )
    select l.sid as subscription_id, s.billable_metric_id, s.period_start,
           s.filter_key::text as filter_key, s.group_key::text as group_key, s.events_count,
           s.unbillable_count, s.total, s.precise_total, s.moment, s.maximum, s.latest_value,
           s.latest_ts, s.latest_seq, s.state::text as state, s.day_totals::text as day_totals
    from line l
    join usage_states s on s.subscription_id = l.member
     and ((l.member = l.sid and s.period_start = l.ps)
          or (s.billable_metric_id = any(cast(:rec as bigint[]))
              and (s.period_start < l.ps or (l.member <> l.sid and s.period_start = l.ps))))
    """
)


def read_states(
    conn: Connection,
    metrics: Mapping[int, MetricInfo],
    wanted: Mapping[int, datetime],
    recurring_ids: Sequence[int] = (),
) -> StoredStates:
    """Stored states of each subscription for the period starting at ``wanted[sub]``.

    For ``recurring_ids`` metrics the earlier periods come too (recurring sums read all
    history; a recurring weighted sum carries their variation as its initial level).
    """
    sub_ids = list(wanted)
    starts = [wanted[s] for s in sub_ids]
    rows = conn.execute(
        _READ_STATES_WITH_LINEAGE if recurring_ids else _READ_STATES,
        {"subs": sub_ids, "starts": starts, "rec": list(recurring_ids)},
    ).mappings()
    out: StoredStates = defaultdict(dict)
    keys: dict[str, tuple[tuple[str, str | None], ...]] = {}  # few distinct key texts
    for row in rows:
        metric = metrics.get(row["billable_metric_id"])
        if metric is None:
            continue
        filter_text, group_text = row["filter_key"], row["group_key"]
        if filter_text not in keys:
            keys[filter_text] = filter_key_of(loads_exact(filter_text))
        if group_text not in keys:
            keys[group_text] = group_values_of(loads_exact(group_text))
        key: StateKey = (metric.id, row["period_start"], keys[filter_text], keys[group_text])
        state = state_of_row(metric.aggregation_type, row)
        held = out[row["subscription_id"]]
        # a replaced row's state for the same period merges into the row's own
        held[key] = held[key].merge(state) if key in held else state  # type: ignore[arg-type]
    return out


_PENDING = text(
    """
    select e.external_subscription_id, e.code, e."timestamp", e.id,
           e.properties::text as properties, e.precise_total_amount_cents
    from events e
    where e.object_id = any(cast(:objects as bigint[]))
      and e.external_subscription_id = any(cast(:subs as text[]))
      and e.voided_at is null  -- a voided event counts nowhere (tasks/voids.py)
    """
)


_UNFOLDED = text("select id from ingest_objects where status = 'ingested' and folded_at is null")


def fold_pending_events(
    conn: Connection,
    metrics: Mapping[int, MetricInfo],
    subscriptions: Mapping[int, SubscriptionInfo],
    wanted: Mapping[int, BillingPeriod],
    recurring_ids: Sequence[int] = (),
) -> StoredStates:
    """States of the events ingested but not yet folded, keyed like stored states.

    Read in the same snapshot as the stored states (REPEATABLE READ), so an event is counted
    either here or there, never both and never neither.
    """
    by_code = {m.code: m for m in metrics.values()}
    # A plan change leaves rows with one external id and lives that do not overlap.
    by_external: dict[str, list[SubscriptionInfo]] = defaultdict(list)
    for info in subscriptions.values():
        if info.id in wanted:
            by_external[info.external_id].append(info)
    out: StoredStates = defaultdict(dict)
    if not by_external:
        return out
    # The unfolded objects first (a partial-index lookup): usually few or none, so the events
    # query touches only new events and never a subscription's history.
    objects = [int(i) for i in conn.execute(_UNFOLDED).scalars()]
    if not objects:
        return out
    rows = conn.execute(_PENDING, {"objects": objects, "subs": list(by_external)}).all()
    for row in rows:
        metric = by_code.get(row.code)
        stamp: datetime = row.timestamp
        sub = next((s for s in by_external[row.external_subscription_id]
                    if s.subscription_at <= stamp
                    and (s.terminated_at is None or stamp <= s.terminated_at)), None)
        if metric is None or sub is None:
            continue
        current = wanted[sub.id]
        if stamp > current.charges_to:
            continue
        if stamp < current.charges_from:
            if metric.id not in recurring_ids:
                continue
            period_start = sub.period_at(stamp).period_start
        else:
            period_start = current.period_start
        point = EventPoint.from_event(
            timestamp=stamp,
            seq=int(row.id),
            properties=loads_exact(row.properties),
            field_name=metric.field_name,
            precise_total_amount_cents=row.precise_total_amount_cents,
        )
        if keeps_days(metric):
            zone = ZoneInfo(sub.timezone or "UTC")
            point = replace(point, day=stamp.astimezone(zone).date())
        key: StateKey = (
            metric.id,
            period_start,
            metric_filter_key(metric.filters, point.properties),
            tuple((k, point.properties.get(k)) for k in sorted(metric.group_keys)),
        )
        states = out[sub.id]
        if key not in states:
            states[key] = empty_state(metric.aggregation_type)
        states[key] = states[key].add(point)
    return out


def merge_stored(left: StoredStates, right: StoredStates) -> StoredStates:
    """Merge two keyed state maps (stored + pending)."""
    out: StoredStates = defaultdict(dict)
    for source in (left, right):
        for sub, states in source.items():
            target = out[sub]
            for key, state in states.items():
                target[key] = target[key].merge(state) if key in target else state  # type: ignore[arg-type]
    return out
