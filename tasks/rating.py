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

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from models.rating import (
    AggregationType,
    AnyState,
    BillingPeriod,
    CountState,
    EventPoint,
    FilterKey,
    LatestState,
    MaxState,
    MetricFilter,
    SumState,
    UniqueCountState,
    UniqueOp,
    WeightedSumState,
    empty_state,
    metric_filter_key,
)
from models.rating.aggregation import Operation
from models.rating.pricing import GroupValues, MetricInfo, StateKey, SubscriptionInfo
from tallyflow.failpoints import failpoint

# Folds share this advisory lock; a rebuild takes it exclusively so no fold interleaves.
FOLD_LOCK: Final = 7_305_040
DEFAULT_FOLD_OBJECTS: Final = 200
PLAIN_DECIMAL_SQL: Final = r"^-?[0-9]+(\.[0-9]+)?$"  # ASCII digits, as models.rating.money



def loads_exact(raw: str | None) -> Any:
    """JSON with decimals kept exact (a float would already have lost digits)."""
    return None if raw is None else json.loads(raw, parse_float=Decimal)


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


_SUBSCRIPTIONS = """
    select s.id, s.external_id, s.plan_id, p.interval, s.billing_time, s.subscription_at,
           s.terminated_at, c.timezone,
           coalesce(c.currency, p.amount_currency) as currency,
           greatest(s.updated_at, p.updated_at, c.updated_at, pm.metrics_at) as catalog_at
    from subscriptions s
    join plans p on p.id = s.plan_id
    join customers c on c.id = s.customer_id
    left join (select ch.plan_id, max(m.updated_at) as metrics_at
               from charges ch join billable_metrics m on m.id = ch.billable_metric_id
               where ch.effective_to is null
               group by ch.plan_id) pm on pm.plan_id = p.id
"""


def load_subscriptions(
    conn: Connection, external_ids: Sequence[str] | None = None
) -> dict[str, SubscriptionInfo]:
    """Subscriptions by external id (all of them when ``external_ids`` is None)."""
    if external_ids is None:
        rows = conn.execute(text(_SUBSCRIPTIONS))
    else:
        rows = conn.execute(
            text(_SUBSCRIPTIONS + " where s.external_id = any(cast(:ids as text[]))"),
            {"ids": list(external_ids)},
        )
    return {row.external_id: SubscriptionInfo(**row._mapping) for row in rows}


# --------------------------------------------------------------------------------------------
# Folding
# --------------------------------------------------------------------------------------------


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

    def as_dict(self) -> dict[str, int]:
        return {
            "folds": self.folds,
            "objects": self.objects,
            "events": self.events,
            "folded": self.folded,
            "unbillable": self.unbillable,
            "subscriptions": len(self.subscriptions),
        }


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
        cleared = conn.execute(
            text(
                "delete from usage_states where billable_metric_id = any(cast(:m as bigint[]))"
                " returning subscription_id"
            ),
            {"m": metric_ids},
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
            batch = fold_objects(conn, chunk, fold_id, metric_ids, metrics)
            summary.objects += len(chunk)
            summary.events += batch.events
            summary.folded += batch.folded
            summary.subscriptions |= batch.subscriptions
        _finish_fold(conn, fold_id, summary.objects, summary)
    return summary


def _tune(conn: Connection) -> None:
    """Settings for the fold statements, local to the fold transaction.

    The new objects' ids are always beyond the column statistics, so the planner expects
    about one event and would pick a nested loop against the periods list (measured: 200 s
    for 100k events over 10k subscriptions); a hash join takes well under a second. Grouping
    60k keys wants more than the default work_mem to stay in memory.
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


def _mark(conn: Connection, subscription_ids: Iterable[int], fold_id: int) -> None:
    ids = sorted(set(subscription_ids))
    if ids:
        conn.execute(_MARK, {"ids": ids, "fold_id": fold_id})


_MARK = text(
    """
    insert into usage_marks (subscription_id, fold_id)
    select unnest(cast(:ids as bigint[])), :fold_id
    on conflict (subscription_id) do update
      set fold_id = greatest(usage_marks.fold_id, excluded.fold_id), updated_at = now()
    """
)

_SPANS = text(
    """
    select external_subscription_id, min("timestamp") as first, max("timestamp") as last,
           count(*) as events
    from events
    where object_id between :first and :last and object_id = any(cast(:ids as bigint[]))
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

    def params(self) -> dict[str, list[Any]]:
        return {
            "p_sub": self.subscription_ids,
            "p_ext": self.external_ids,
            "p_start": self.starts,
            "p_from": self.froms,
            "p_to": self.tos,
        }


def _period_rows(conn: Connection, object_ids: Sequence[int]) -> tuple[PeriodRows, int]:
    """Every period that an event of these objects can fall in, per known subscription.

    Periods are computed in Python (they depend on interval, billing time, start and the
    customer's timezone) from each subscription's first and last event time in the batch.
    """
    # The range lets the BRIN index on object_id find the new events without a scan.
    spans = conn.execute(
        _SPANS, {"ids": list(object_ids), "first": min(object_ids), "last": max(object_ids)}
    ).all()
    events = sum(int(row.events) for row in spans)
    subs = load_subscriptions(conn, [row.external_subscription_id for row in spans])
    rows = PeriodRows([], [], [], [], [])
    for span in spans:
        sub = subs.get(span.external_subscription_id)
        if sub is None:
            continue
        for period in sub.periods_between(span.first, span.last):
            rows.subscription_ids.append(sub.id)
            rows.external_ids.append(sub.external_id)
            rows.starts.append(period.period_start)
            rows.froms.append(period.charges_from)
            rows.tos.append(period.charges_to)
    return rows, events


_PERIODS_CTE = """
    p as (
      select * from unnest(cast(:p_sub as bigint[]), cast(:p_ext as text[]),
                           cast(:p_start as timestamptz[]), cast(:p_from as timestamptz[]),
                           cast(:p_to as timestamptz[]))
        as p(subscription_id, external_id, period_start, charges_from, charges_to)
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
             e."timestamp" as ts, e.id as seq, e.precise_total_amount_cents as precise,
             coalesce(e.properties ->> 'operation_type', 'add') as op
      from events e
      join p on p.external_id = e.external_subscription_id
            and e."timestamp" between p.charges_from and p.charges_to
      where e.object_id between :first_object and :last_object
        and e.object_id = any(cast(:objects as bigint[])) and e.code = :code
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
             {latest}
      from ev2 group by subscription_id, period_start{key_names}
    ),
    up as (
      insert into usage_states as s (subscription_id, billable_metric_id, period_start,
        filter_key, group_key, events_count, unbillable_count, total, precise_total, moment,
        maximum, latest_value, latest_ts, latest_seq, fold_id)
      select subscription_id, :metric_id, period_start, filter_key, group_key, events_count,
             unbillable_count, total, precise_total, moment, maximum, latest_value, latest_ts,
             latest_seq, :fold_id
      from g order by 1, 2, 3, 4
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

_FOLD_UNIQUE = """
    with {periods}, {events},
    ev2 as (
      select *, vtext is not null and op in ('add', 'remove') as ok from ev
    )
    select subscription_id, period_start, ({filter_json})::text as filter_key,
           ({group_json})::text as group_key, vtext,
           count(*) filter (where ok) as counted, count(*) filter (where not ok) as unbillable,
           (array_agg(op order by ts desc, seq desc, op desc) filter (where ok))[1] as op,
           (array_agg(ts order by ts desc, seq desc, op desc) filter (where ok))[1] as ts,
           (array_agg(seq order by ts desc, seq desc, op desc) filter (where ok))[1] as seq
    from ev2 group by subscription_id, period_start{key_names}, vtext
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
) -> FoldSummary:
    """Fold the events of ``object_ids`` into usage state, inside the caller's transaction."""
    metrics = metrics if metrics is not None else load_metrics(conn)
    periods, events = _period_rows(conn, object_ids)
    summary = FoldSummary(events=events)
    if not periods.subscription_ids:
        return summary
    for metric_id in metric_ids if metric_ids is not None else list(metrics):
        metric = metrics[metric_id]
        keys = _key_sql(metric.filters, metric.group_keys)
        params = dict(keys.params)
        value_text = _PROP.format(name="field") if metric.field_name else "cast(null as text)"
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
        events_cte = _sql(_EVENTS_CTE, key_columns=keys.columns, value_text=value_text)
        shape = {
            "filter_json": keys.filter_json,
            "group_json": keys.group_json,
            "key_names": keys.names,
        }
        if metric.aggregation_type is AggregationType.UNIQUE_COUNT:
            folded, subs = _fold_unique(conn, events_cte, shape, params, metric, fold_id)
        else:
            latest = (
                _LATEST_COLUMNS if metric.aggregation_type is AggregationType.LATEST else _NO_LATEST
            )
            statement = _sql(
                _FOLD_TYPED,
                periods=_PERIODS_CTE,
                events=events_cte,
                latest=latest,
                newer=_NEWER,
                **shape,
            )
            params.update(
                count_all=metric.aggregation_type is AggregationType.COUNT,
                plain=PLAIN_DECIMAL_SQL,
            )
            row = conn.execute(text(statement), params).one()
            folded, subs = int(row.folded), set(row.subs)
        summary.folded += folded
        _mark(conn, subs, fold_id)
        summary.subscriptions |= subs
    return summary


def _fold_unique(
    conn: Connection,
    events_cte: str,
    shape: dict[str, str],
    params: dict[str, Any],
    metric: MetricInfo,
    fold_id: int,
) -> tuple[int, set[int]]:
    """unique_count: last operation per distinct value in SQL, merged into jsonb in Python."""
    rows = conn.execute(
        text(_sql(_FOLD_UNIQUE, periods=_PERIODS_CTE, events=events_cte, **shape)), params
    ).all()
    partial: dict[tuple[int, datetime, str, str], UniqueCountState] = {}
    folded = 0
    for row in rows:
        key = (row.subscription_id, row.period_start, row.filter_key, row.group_key)
        folded += int(row.counted) + int(row.unbillable)
        ops = {}
        if row.op is not None and row.vtext is not None:
            ops[row.vtext] = UniqueOp(row.ts, int(row.seq), Operation(row.op))
        state = UniqueCountState(ops, int(row.counted), int(row.unbillable))
        partial[key] = partial[key].merge(state) if key in partial else state
    if not partial:
        return folded, set()
    subs = sorted({k[0] for k in partial})
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
        {"m": metric.id, "subs": subs},
    ).all()
    stored = {
        (r.subscription_id, r.period_start, _canonical(r.filter_key), _canonical(r.group_key)): (
            UniqueCountState.from_json(loads_exact(r.state))
        )
        for r in existing
    }
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
            }
        )
    conn.execute(
        text(
            """
            insert into usage_states (subscription_id, billable_metric_id, period_start,
              filter_key, group_key, events_count, unbillable_count, state, fold_id)
            values (:sub, :m, :start, cast(:fk as jsonb), cast(:gk as jsonb), :count,
                    :unbillable, cast(:state as jsonb), :fold_id)
            on conflict (subscription_id, billable_metric_id, period_start, filter_key, group_key)
            do update set events_count = excluded.events_count,
              unbillable_count = excluded.unbillable_count, state = excluded.state,
              fold_id = excluded.fold_id, updated_at = now()
            """
        ),
        upserts,
    )
    return folded, set(subs)


def _canonical(raw_json: str) -> str:
    return json.dumps(loads_exact(raw_json), sort_keys=True)


# --------------------------------------------------------------------------------------------
# Reading state back as pure states
# --------------------------------------------------------------------------------------------


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
        return SumState(row["total"], count, unbillable, row["precise_total"])
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
           s.latest_ts, s.latest_seq, s.state::text as state
    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as w(sid, ps)
    join usage_states s on s.subscription_id = w.sid
     and (s.period_start = w.ps
          or (s.billable_metric_id = any(cast(:rec as bigint[])) and s.period_start < w.ps))
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
        _READ_STATES,
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
        out[row["subscription_id"]][key] = state_of_row(metric.aggregation_type, row)
    return out


_PENDING = text(
    """
    select e.external_subscription_id, e.code, e."timestamp", e.id,
           e.properties::text as properties, e.precise_total_amount_cents
    from events e
    where e.object_id = any(cast(:objects as bigint[]))
      and e.external_subscription_id = any(cast(:subs as text[]))
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
    by_external = {s.external_id: s for s in subscriptions.values() if s.id in wanted}
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
        sub = by_external[row.external_subscription_id]
        if metric is None:
            continue
        stamp: datetime = row.timestamp
        current = wanted[sub.id]
        if stamp > current.charges_to or stamp < sub.subscription_at:
            continue
        if sub.terminated_at is not None and stamp > sub.terminated_at:
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
