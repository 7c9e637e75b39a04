"""The SQL folds, generated per metric from its filters and group keys.

Each is one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT``; a differential property test
holds them to the pure aggregation of ``tallyflow.models.rating``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.models.lago.summaries import FoldFigures
from tallyflow.models.rating import (
    MetricFilter,
    UniqueCountState,
    UniqueOp,
)
from tallyflow.models.rating.aggregation import DayOps, Operation, definition_of
from tallyflow.models.rating.pricing import MetricInfo, SubscriptionInfo
from tallyflow.tasks.folding.inputs import (
    PLAIN_DECIMAL_SQL,
    keeps_days,
    load_metrics,
    load_subscription_rows,
    loads_exact,
)

_SPANS = text(
    """
    select external_subscription_id, min("timestamp") as first, max("timestamp") as last,
           count(*) as events
    from events
    where object_id between :first and :last and object_id = any(cast(:ids as bigint[]))
      and voided_at is null  -- a voided event counts nowhere (tasks/corrections/voids.py)
    group by external_subscription_id
    """
)


@dataclass(frozen=True)
class PeriodRows:
    """Candidate periods of the subscriptions in a batch, as arrays for an ``unnest`` join."""

    subscription_ids: list[int]
    external_ids: list[str]
    starts: list[datetime]
    froms: list[datetime]
    tos: list[datetime]
    zones: list[str]  # the customer's timezone: local days (tasks/folding/inputs.keeps_days)

    def params(self) -> dict[str, list[Any]]:
        return {
            "p_sub": self.subscription_ids,
            "p_ext": self.external_ids,
            "p_start": self.starts,
            "p_from": self.froms,
            "p_to": self.tos,
            "p_zone": self.zones,
        }


def _period_rows(
    conn: Connection, object_ids: Sequence[int], only: Collection[int] | None = None,
    since: datetime | None = None,
) -> tuple[PeriodRows, int]:
    """Every period that an event of these objects can fall in, per known subscription row
    (only the subscription ids ``only`` names, when given: a one-subscription rebuild), from
    the period starting at ``since`` on, when given (a rebuild keeps the state of archived
    periods: their events left the table, tasks/archive/events.py).

    Periods are computed in Python (they depend on interval, billing time, start and the
    customer's timezone) from each subscription's first and last event time in the batch.
    """
    # The range lets the BRIN index on object_id find the new events without a scan.
    spans = conn.execute(
        _SPANS, {"ids": list(object_ids), "first": min(object_ids), "last": max(object_ids)}
    ).all()
    events = sum(int(row.events) for row in spans)
    subs: dict[str, list[SubscriptionInfo]] = defaultdict(list)
    for info in load_subscription_rows(conn, [row.external_subscription_id for row in spans]):
        if only is None or info.id in only:
            subs[info.external_id].append(info)
    rows = PeriodRows([], [], [], [], [], [])
    for span in spans:
        for sub in subs.get(span.external_subscription_id, ()):
            for period in sub.periods_between(span.first, span.last):
                if since is not None and period.period_start < since:
                    continue
                rows.subscription_ids.append(sub.id)
                rows.external_ids.append(sub.external_id)
                rows.starts.append(period.period_start)
                rows.froms.append(period.charges_from)
                rows.tos.append(period.charges_to)
                rows.zones.append(period.timezone)
    return rows, events


_PERIODS_CTE = """
    p as (
      select * from unnest(cast(:p_sub as bigint[]), cast(:p_ext as text[]),
                           cast(:p_start as timestamptz[]), cast(:p_from as timestamptz[]),
                           cast(:p_to as timestamptz[]), cast(:p_zone as text[]))
        as p(subscription_id, external_id, period_start, charges_from, charges_to, zone)
    )
"""


# Text of a comparable property (string, number, boolean), else NULL, like property_text().
_PROP = (
    "(case when jsonb_typeof(e.properties -> cast(:{name} as text))"
    " in ('string', 'number', 'boolean') then e.properties ->> cast(:{name} as text) end)"
)


@dataclass(frozen=True)
class KeySql:
    """SQL fragments for a metric's state key; only placeholders are generated.

    Property keys and allowed values are bound parameters (data), never SQL text. Events
    carry the key as text columns (``k0``, ``k1``...), which group much faster than jsonb;
    the jsonb key is built once per group.
    """

    columns: str
    names: str
    filter_json: str
    group_json: str
    params: dict[str, Any]


def _key_sql(filters: Sequence[MetricFilter], group_keys: Sequence[str]) -> KeySql:
    params: dict[str, Any] = {}
    columns: list[str] = []
    filter_parts: list[str] = []
    group_parts: list[str] = []
    for index, metric_filter in enumerate(filters):
        key, values = f"fk{index}", f"fv{index}"
        params[key], params[values] = metric_filter.key, list(metric_filter.values)
        prop = f"e.properties ->> cast(:{key} as text)"
        # A value outside the declared list can never match a charge filter: fold it as NULL.
        columns.append(
            f"case when {prop} = any(cast(:{values} as text[])) then {prop} end as k{index}"
        )
        filter_parts.append(f"cast(:{key} as text), k{index}")
    for index, key_name in enumerate(group_keys):
        key = f"gk{index}"
        params[key] = key_name
        column = f"g{index}"
        columns.append(f"{_PROP.format(name=key)} as {column}")
        group_parts.append(f"cast(:{key} as text), {column}")
    names = [f"k{i}" for i in range(len(filters))] + [f"g{i}" for i in range(len(group_keys))]
    return KeySql(
        columns="".join(f"{c}, " for c in columns),
        names="".join(f", {n}" for n in names),
        filter_json=(
            f"jsonb_build_object({', '.join(filter_parts)})" if filter_parts else "'{}'::jsonb"
        ),
        group_json=f"jsonb_build_object({', '.join(group_parts)})"
        if group_parts
        else "'{}'::jsonb",
        params=params,
    )


_EVENTS_CTE = """
    ev as (
      select p.subscription_id, p.period_start, {key_columns}{value_text} as vtext,
             {value_type} as vtype, e.transaction_id as txn, e."timestamp" as ts,
             e.id as seq, e.precise_total_amount_cents as precise,
             coalesce(e.properties ->> 'operation_type', 'add') as op,
             (e."timestamp" at time zone p.zone)::date as day
      from events e
      join p on p.external_id = e.external_subscription_id
            and e."timestamp" between p.charges_from and p.charges_to
      where e.object_id between :first_object and :last_object
        and e.object_id = any(cast(:objects as bigint[])) and e.code = :code
        and e.voided_at is null
    )
"""


_LATEST_COLUMNS = """
      (array_agg(v order by ts desc, seq desc, v desc) filter (where v is not null))[1]
        as latest_value,
      (array_agg(ts order by ts desc, seq desc, v desc) filter (where v is not null))[1]
        as latest_ts,
      (array_agg(seq order by ts desc, seq desc, v desc) filter (where v is not null))[1]
        as latest_seq
"""


_NO_LATEST = """
      cast(null as numeric) as latest_value, cast(null as timestamptz) as latest_ts,
      cast(null as bigint) as latest_seq
"""


_FOLD_TYPED = """
    with {periods}, {events},
    ev2 as (
      select *, case when vtext ~ :plain then cast(vtext as numeric) end as v from ev
    ),
    -- a value present (not absent, not null) that is not a plain number: not_a_number
    -- (models/rating/unbillable.py); its events add nothing, their count and ids are kept
    ev3 as (
      select *, not :count_all and v is null and vtype is not null and vtype <> 'null' as nan,
             :count_all or v is not null as counted
      from ev2
    ),
    g as (
      select subscription_id, period_start, {filter_json} as filter_key,
             {group_json} as group_key,
             case when :count_all then count(*) else count(v) end as events_count,
             case when :count_all then 0 else count(*) - count(v) end as unbillable_count,
             count(*) as seen,
             coalesce(sum(v), 0) as total,
             coalesce(sum(precise), 0) as precise_total,
             coalesce(sum(v * extract(epoch from ts)), 0) as moment,
             max(v) as maximum,
             count(*) filter (where nan) as nan_count,
             coalesce((array_agg(txn order by seq) filter (where nan))[1:3], '{{}}')
               as nan_ids,
             -- samples of the events counted: two ids cost two comparisons per event
             array_remove(array[min(txn) filter (where counted),
                                nullif(max(txn) filter (where counted),
                                       min(txn) filter (where counted))], null) as samples,
             {latest}
      from ev3 group by subscription_id, period_start{key_names}
    ),
    dd as (
      select subscription_id, period_start, {filter_json} as filter_key,
             {group_json} as group_key, day, sum(v) as day_total
      from ev2 where :with_days and v is not null
      group by subscription_id, period_start{key_names}, day
    ),
    dj as (
      select subscription_id, period_start, filter_key, group_key,
             jsonb_object_agg(day::text, day_total) as days
      from dd group by subscription_id, period_start, filter_key, group_key
    ),
    up as (
      insert into usage_states as s (subscription_id, billable_metric_id, period_start,
        filter_key, group_key, events_count, unbillable_count, total, precise_total, moment,
        maximum, latest_value, latest_ts, latest_seq, day_totals, fold_id,
        not_a_number_count, not_a_number_ids, sample_ids)
      select g.subscription_id, :metric_id, g.period_start, g.filter_key, g.group_key,
             events_count, unbillable_count, total, precise_total, moment, maximum,
             latest_value, latest_ts, latest_seq, dj.days, :fold_id,
             nan_count, nan_ids, samples
      from g left join dj on dj.subscription_id = g.subscription_id
        and dj.period_start = g.period_start and dj.filter_key = g.filter_key
        and dj.group_key = g.group_key
      order by 1, 3, 4, 5
      on conflict (subscription_id, billable_metric_id, period_start, filter_key, group_key)
      do update set
        events_count = s.events_count + excluded.events_count,
        unbillable_count = s.unbillable_count + excluded.unbillable_count,
        total = s.total + excluded.total,
        precise_total = s.precise_total + excluded.precise_total,
        moment = s.moment + excluded.moment,
        maximum = greatest(s.maximum, excluded.maximum),
        latest_value = case when {newer} then excluded.latest_value else s.latest_value end,
        latest_ts = case when {newer} then excluded.latest_ts else s.latest_ts end,
        latest_seq = case when {newer} then excluded.latest_seq else s.latest_seq end,
        day_totals = {merge_days},
        not_a_number_count = s.not_a_number_count + excluded.not_a_number_count,
        not_a_number_ids = (s.not_a_number_ids || excluded.not_a_number_ids)[1:3],
        sample_ids = (s.sample_ids || excluded.sample_ids)[1:3],
        fold_id = excluded.fold_id,
        updated_at = now()
      returning subscription_id
    )
    select (select coalesce(sum(seen), 0) from g) as folded,
           (select coalesce(array_agg(distinct subscription_id), '{{}}') from up) as subs
"""


_NEWER = (
    "(s.latest_ts is null or (excluded.latest_ts is not null and "
    "(excluded.latest_ts, excluded.latest_seq, excluded.latest_value) > "
    "(s.latest_ts, s.latest_seq, s.latest_value)))"
)


# Per-day totals added day by day (SumState.merge in SQL).
_MERGE_DAYS = """case when excluded.day_totals is null then s.day_totals
          when s.day_totals is null then excluded.day_totals
          else (select jsonb_object_agg(k, t) from (
                  select k, sum(cast(v as numeric)) as t
                  from (select key, value from jsonb_each_text(s.day_totals)
                        union all
                        select key, value from jsonb_each_text(excluded.day_totals)) as x(k, v)
                  group by k) as y)
        end"""


# Per distinct value (and, for recurring unique counts, per local day: ``DayOps``) the last
# operation; per day also the first add and whether it removes.
_FOLD_UNIQUE = """
    with {periods}, {events},
    ev2 as (
      select *, vtext is not null and op in ('add', 'remove') as ok,
             case when :with_days then day end as dday
      from ev
    )
    select subscription_id, period_start, ({filter_json})::text as filter_key,
           ({group_json})::text as group_key, vtext, dday,
           count(*) filter (where ok) as counted, count(*) filter (where not ok) as unbillable,
           (array_agg(op order by ts desc, seq desc, op desc) filter (where ok))[1] as op,
           (array_agg(ts order by ts desc, seq desc, op desc) filter (where ok))[1] as ts,
           (array_agg(seq order by ts desc, seq desc, op desc) filter (where ok))[1] as seq,
           (array_agg(ts order by ts, seq) filter (where ok and op = 'add'))[1] as add_ts,
           (array_agg(seq order by ts, seq) filter (where ok and op = 'add'))[1] as add_seq,
           coalesce(bool_or(ok and op = 'remove'), false) as removes,
           min(txn) filter (where ok) as sample_low, max(txn) filter (where ok) as sample_high
    from ev2 group by subscription_id, period_start{key_names}, vtext, dday
"""


def _sql(template: str, **parts: str) -> str:
    """Assemble a statement from this module's constant fragments (no data goes in)."""
    return template.format(**parts)


def fold_objects(
    conn: Connection,
    object_ids: Sequence[int],
    fold_id: int,
    metric_ids: Sequence[int] | None = None,
    metrics: Mapping[int, MetricInfo] | None = None,
    subscriptions: Collection[int] | None = None,
    since: datetime | None = None,
) -> FoldSummary:
    """Fold the events of ``object_ids`` into usage state, inside the caller's transaction
    (of the ``subscriptions`` ids only, when given; of periods starting at ``since`` or
    later, when given)."""
    metrics = metrics if metrics is not None else load_metrics(conn)
    periods, events = _period_rows(conn, object_ids, subscriptions, since)
    summary = FoldSummary(events=events)
    if not periods.subscription_ids:
        return summary
    for metric_id in metric_ids if metric_ids is not None else list(metrics):
        metric = metrics[metric_id]
        keys = _key_sql(metric.filters, metric.group_keys)
        params = dict(keys.params)
        value_text = _PROP.format(name="field") if metric.field_name else "cast(null as text)"
        value_type = ("jsonb_typeof(e.properties -> cast(:field as text))" if metric.field_name
                      else "cast(null as text)")
        params.update(
            periods.params(),
            objects=list(object_ids),
            first_object=min(object_ids),
            last_object=max(object_ids),
            code=metric.code,
            metric_id=metric.id,
            fold_id=fold_id,
            field=metric.field_name,
        )
        events_cte = _sql(_EVENTS_CTE, key_columns=keys.columns, value_text=value_text,
                          value_type=value_type)
        shape = {
            "filter_json": keys.filter_json,
            "group_json": keys.group_json,
            "key_names": keys.names,
        }
        kind = definition_of(metric.aggregation_type)
        if kind.sql_fold == "unique":
            params["with_days"] = keeps_days(metric)
            folded, subs = _fold_unique(conn, events_cte, shape, params, metric, fold_id)
        else:
            latest = _LATEST_COLUMNS if kind.keeps_latest else _NO_LATEST
            statement = _sql(
                _FOLD_TYPED,
                periods=_PERIODS_CTE,
                events=events_cte,
                latest=latest,
                newer=_NEWER,
                merge_days=_MERGE_DAYS,
                **shape,
            )
            params.update(
                count_all=kind.counts_every_event,
                plain=PLAIN_DECIMAL_SQL,
                with_days=keeps_days(metric),
            )
            row = conn.execute(text(statement), params).one()
            folded, subs = int(row.folded), set(row.subs)
        summary.folded += folded
        _mark(conn, subs, fold_id)
        summary.subscriptions |= subs
    return summary


_UniqueKey = tuple[int, datetime, str, str]  # subscription, period start, filter, group keys


def _fold_unique(
    conn: Connection,
    events_cte: str,
    shape: dict[str, str],
    params: dict[str, Any],
    metric: MetricInfo,
    fold_id: int,
) -> tuple[int, set[int]]:
    """unique_count: last operation per distinct value in SQL, merged into jsonb in Python
    (read the new operations, then the stored states under a row lock, merge, upsert)."""
    rows = conn.execute(
        text(_sql(_FOLD_UNIQUE, periods=_PERIODS_CTE, events=events_cte, **shape)), params
    ).all()
    folded, partial, bounds = _unique_partials(rows)
    if not partial:
        return folded, set()
    subs = sorted({k[0] for k in partial})
    stored = _stored_unique_states(conn, metric.id, subs)
    upserts = []
    for (sub, start, filter_key, group_key), state in sorted(partial.items()):
        canon = (sub, start, _canonical(filter_key), _canonical(group_key))
        merged = stored[canon].merge(state) if canon in stored else state
        upserts.append(
            {
                "sub": sub,
                "m": metric.id,
                "start": start,
                "fk": filter_key,
                "gk": group_key,
                "count": merged.events_count,
                "unbillable": merged.unbillable_count,
                "state": json.dumps(merged.to_json()),
                "fold_id": fold_id,
                "samples": _samples(bounds.get((sub, start, filter_key, group_key))),
            }
        )
    conn.execute(_UPSERT_UNIQUE, upserts)
    return folded, set(subs)


def _unique_partials(
    rows: Sequence[Any],
) -> tuple[int, dict[_UniqueKey, UniqueCountState], dict[_UniqueKey, tuple[str, str]]]:
    """The ``_FOLD_UNIQUE`` rows as one state per key: how many events they fold, the states,
    and the samples (the smallest and largest transaction id counted, as the typed fold keeps
    them)."""
    partial: dict[_UniqueKey, UniqueCountState] = {}
    bounds: dict[_UniqueKey, tuple[str, str]] = {}
    folded = 0
    for row in rows:
        key = (row.subscription_id, row.period_start, row.filter_key, row.group_key)
        folded += int(row.counted) + int(row.unbillable)
        if row.sample_low is not None:
            low, high = bounds.get(key, (row.sample_low, row.sample_high))
            bounds[key] = (min(low, row.sample_low), max(high, row.sample_high))
        ops = {}
        days: dict[str, dict[str, DayOps]] = {}
        if row.op is not None and row.vtext is not None:
            last = UniqueOp(row.ts, int(row.seq), Operation(row.op))
            ops[row.vtext] = last
            if row.dday is not None:
                first = (None if row.add_ts is None
                         else UniqueOp(row.add_ts, int(row.add_seq), Operation.ADD))
                days[row.vtext] = {row.dday.isoformat(): DayOps(first, bool(row.removes), last)}
        state = UniqueCountState(ops, int(row.counted), int(row.unbillable), days)
        partial[key] = partial[key].merge(state) if key in partial else state
    return folded, partial, bounds


def _stored_unique_states(
    conn: Connection, metric_id: int, subs: Sequence[int]
) -> dict[_UniqueKey, UniqueCountState]:
    """The stored states of these subscriptions' metric, locked (in key order) until the
    fold's transaction ends, by canonical key."""
    existing = conn.execute(
        text(
            """
            select subscription_id, period_start, filter_key::text as filter_key,
                   group_key::text as group_key, state::text as state
            from usage_states
            where billable_metric_id = :m and subscription_id = any(cast(:subs as bigint[]))
            order by subscription_id, period_start, filter_key, group_key
            for update
            """
        ),
        {"m": metric_id, "subs": subs},
    ).all()
    return {
        (r.subscription_id, r.period_start, _canonical(r.filter_key), _canonical(r.group_key)): (
            UniqueCountState.from_json(loads_exact(r.state))
        )
        for r in existing
    }


_UPSERT_UNIQUE = text(
    """
    insert into usage_states (subscription_id, billable_metric_id, period_start,
      filter_key, group_key, events_count, unbillable_count, state, fold_id, sample_ids)
    values (:sub, :m, :start, cast(:fk as jsonb), cast(:gk as jsonb), :count,
            :unbillable, cast(:state as jsonb), :fold_id, cast(:samples as text[]))
    on conflict (subscription_id, billable_metric_id, period_start, filter_key, group_key)
    do update set events_count = excluded.events_count,
      unbillable_count = excluded.unbillable_count, state = excluded.state,
      sample_ids = (usage_states.sample_ids || excluded.sample_ids)[1:3],
      fold_id = excluded.fold_id, updated_at = now()
    """
)


def _samples(bounds: tuple[str, str] | None) -> list[str]:
    if bounds is None:
        return []
    return [bounds[0]] if bounds[0] == bounds[1] else list(bounds)


def _canonical(raw_json: str) -> str:
    return json.dumps(loads_exact(raw_json), sort_keys=True)


@dataclass
class FoldSummary:
    """What folds did: objects claimed, events they held, events folded into state."""

    folds: int = 0
    objects: int = 0
    events: int = 0
    folded: int = 0
    subscriptions: set[int] = field(default_factory=set)

    @property
    def unbillable(self) -> int:
        return self.events - self.folded

    def as_dict(self) -> FoldFigures:
        return {
            "folds": self.folds,
            "objects": self.objects,
            "events": self.events,
            "folded": self.folded,
            "unbillable": self.unbillable,
            "subscriptions": len(self.subscriptions),
        }


_MARK = text(
    """
    insert into usage_marks (subscription_id, fold_id)
    select unnest(cast(:ids as bigint[])), :fold_id
    on conflict (subscription_id) do update
      set fold_id = greatest(usage_marks.fold_id, excluded.fold_id), updated_at = now()
    """
)


def _mark(conn: Connection, subscription_ids: Iterable[int], fold_id: int) -> None:
    ids = sorted(set(subscription_ids))
    if ids:
        conn.execute(_MARK, {"ids": ids, "fold_id": fold_id})
