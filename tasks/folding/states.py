"""Reading state back as the pure states of ``tallyflow.models.rating``.

Including events ingested but not yet folded, for live usage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from tallyflow.models.rating import (
    AggregationType,
    AnyState,
    BillingPeriod,
    EventPoint,
    FilterKey,
    empty_state,
    metric_filter_key,
)
from tallyflow.models.rating.aggregation import definition_of
from tallyflow.models.rating.pricing import GroupValues, MetricInfo, StateKey, SubscriptionInfo
from tallyflow.models.rating.unbillable import StateTally, first_ids
from tallyflow.tasks.folding.inputs import keeps_days, loads_exact


def filter_key_of(data: Mapping[str, str | None]) -> FilterKey:
    return tuple(sorted(data.items()))


def group_values_of(data: Mapping[str, str | None]) -> GroupValues:
    return tuple(sorted(data.items()))


def state_of_row(kind: AggregationType, row: Mapping[Any, Any]) -> AnyState:
    """The pure state a ``usage_states`` row stands for (the kind reads its own columns; the
    jsonb ones arrive here as text and are decoded exactly first)."""
    count, unbillable = int(row["events_count"]), int(row["unbillable_count"])
    decoded = {column: loads_exact(row[column]) for column in _JSON_COLUMNS
               if isinstance(row.get(column), str)}
    return definition_of(kind).from_row(
        {**row, **decoded} if decoded else row, count, unbillable)


_JSON_COLUMNS = ("day_totals", "state")


StoredStates = dict[int, dict[StateKey, AnyState]]
"""subscription_id -> state key -> state."""

StoredTallies = dict[int, dict[StateKey, StateTally]]
"""subscription_id -> state key -> what the fold kept beside the state (unbillable events)."""


def _tally(tallies: StoredTallies | None, sub: int, key: StateKey, tally: StateTally) -> None:
    if tallies is not None and (tally.not_a_number or tally.sample_ids):
        held = tallies.setdefault(sub, {})
        held[key] = held[key].merge(tally) if key in held else tally


_READ_STATES = text(
    """
    select s.subscription_id, s.billable_metric_id, s.period_start,
           s.filter_key::text as filter_key, s.group_key::text as group_key, s.events_count,
           s.unbillable_count, s.total, s.precise_total, s.moment, s.maximum, s.latest_value,
           s.latest_ts, s.latest_seq, s.state::text as state, s.day_totals::text as day_totals,
           s.not_a_number_count, s.not_a_number_ids, s.sample_ids
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
           s.latest_ts, s.latest_seq, s.state::text as state, s.day_totals::text as day_totals,
           s.not_a_number_count, s.not_a_number_ids, s.sample_ids
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
    tallies: StoredTallies | None = None,
) -> StoredStates:
    """Stored states of each subscription for the period starting at ``wanted[sub]``.

    For ``recurring_ids`` metrics the earlier periods come too (recurring sums read all
    history; a recurring weighted sum carries their variation as its initial level). Given
    ``tallies``, the unbillable counts and sample ids kept with the states are added to it.
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
        held[key] = held[key].merge(state) if key in held else state
        _tally(tallies, row["subscription_id"], key, StateTally(
            int(row["not_a_number_count"]), tuple(row["not_a_number_ids"]),
            tuple(row["sample_ids"])))
    return out


_PENDING = text(
    """
    select e.external_subscription_id, e.code, e."timestamp", e.id, e.transaction_id,
           e.properties::text as properties, e.precise_total_amount_cents
    from events e
    where e.object_id = any(cast(:objects as bigint[]))
      and e.external_subscription_id = any(cast(:subs as text[]))
      and e.voided_at is null  -- a voided event counts nowhere (tasks/corrections/voids.py)
    order by e.id  -- ingestion order: the not_a_number sample ids come out as the fold's
    """
)


_UNFOLDED = text("select id from ingest_objects where status = 'ingested' and folded_at is null")


def fold_pending_events(
    conn: Connection,
    metrics: Mapping[int, MetricInfo],
    subscriptions: Mapping[int, SubscriptionInfo],
    wanted: Mapping[int, BillingPeriod],
    recurring_ids: Sequence[int] = (),
    tallies: StoredTallies | None = None,
) -> StoredStates:
    """States of the events ingested but not yet folded, keyed like stored states.

    Read in the same snapshot as the stored states (REPEATABLE READ), so an event is counted
    either here or there, never both and never neither; given ``tallies``, its unbillable
    verdict is added there as the fold would have kept it (tasks/folding/sql.py).
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
    seen: dict[tuple[int, StateKey], _Seen] = {}
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
        properties = loads_exact(row.properties)
        point = EventPoint.from_event(
            timestamp=stamp,
            seq=int(row.id),
            properties=properties,
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
        if tallies is not None:
            _pending_tally(seen.setdefault((sub.id, key), _Seen()), metric, properties, point,
                           row.transaction_id)
    for (sub_id, key), found in seen.items():
        _tally(tallies, sub_id, key, found.tally())
    return out


@dataclass
class _Seen:
    """A pending state's unbillable events so far, kept as the fold keeps them
    (tasks/folding/sql.py): not_a_number ids in ingestion order, the smallest and largest
    transaction id of the events counted as samples."""

    nan: int = 0
    nan_ids: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None

    def tally(self) -> StateTally:
        samples = () if self.low is None or self.high is None else (
            (self.low,) if self.low == self.high else (self.low, self.high))
        return StateTally(self.nan, self.nan_ids, samples)


def _pending_tally(
    seen: _Seen, metric: MetricInfo, properties: Mapping[str, Any], point: EventPoint,
    transaction_id: str,
) -> None:
    """One pending event's verdict, as the typed and unique folds reach it in SQL: a value
    present (not null) in the aggregated field that is not a plain number is not_a_number
    (count and unique_count take any value); an event the state counts is a sample of it."""
    kind = definition_of(metric.aggregation_type)
    if (kind.reports_not_a_number and metric.field_name is not None
            and properties.get(metric.field_name) is not None and point.value is None):
        seen.nan += 1
        seen.nan_ids = first_ids(seen.nan_ids, (transaction_id,))
        return
    if kind.counts(point):
        # str order is code point order, which is UTF-8 byte order: the "C" collation's
        seen.low = transaction_id if seen.low is None else min(seen.low, transaction_id)
        seen.high = transaction_id if seen.high is None else max(seen.high, transaction_id)


def merge_stored(left: StoredStates, right: StoredStates) -> StoredStates:
    """Merge two keyed state maps (stored + pending)."""
    out: StoredStates = defaultdict(dict)
    for source in (left, right):
        for sub, states in source.items():
            target = out[sub]
            for key, state in states.items():
                target[key] = target[key].merge(state) if key in target else state
    return out
