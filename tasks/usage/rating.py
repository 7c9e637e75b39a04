"""Current usage (Lago's ``customer_usage``) from usage state, and hourly usage snapshots.

Current usage = stored state of the period + the events of objects not folded yet, both read
in one REPEATABLE READ transaction, so it reflects every event ingested so far whether or not
a snapshot ran, and costs what one subscription's state costs (not what its events cost).
This module reads and writes; pricing itself is the pure ``tallyflow.models.rating.pricing``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models import number_rule
from tallyflow.models.lago.resources import CustomerUsage
from tallyflow.models.lago.results import ProjectedUsage
from tallyflow.models.lago.summaries import ContainedFailure, FoldFigures
from tallyflow.models.rating import (
    BillingPeriod,
    BucketId,
    EventPoint,
    assign_bucket,
    charge_filter_from_values,
)
from tallyflow.models.rating.aggregation import definition_of
from tallyflow.models.rating.pricing import (
    ChargeInfo,
    EventValues,
    FilterInfo,
    MetricInfo,
    SubscriptionInfo,
    SubscriptionUsage,
    pricing_of,
    rate_subscription,
)
from tallyflow.models.rating.projection import period_ratio, projector, with_projection
from tallyflow.tasks.catalog import finalized_versions
from tallyflow.tasks.folding import (
    FoldSummary,
    StoredStates,
    StoredTallies,
    fold_pending,
    fold_pending_events,
    in_force,
    load_metrics,
    load_subscription_rows,
    loads_exact,
    merge_stored,
    read_states,
)
from tallyflow.tasks.runs import contain, failure, names_of, transient_retries
from tallyflow.tasks.usage.changes import change_set_members
from tallyflow.tasks.usage.snapshot_reads import usage_as_of

# --------------------------------------------------------------------------------------------
# Plans as the pricing code needs them
# --------------------------------------------------------------------------------------------

_CHARGE_COLUMNS = """
    select c.id, c.plan_id, c.position, c.billable_metric_id, c.charge_model, c.prorated,
           c.properties::text as properties, c.invoice_display_name, c.pricing_group_keys,
           c.pay_in_advance, c.invoiceable, c.regroup_paid_fees,
           coalesce((select jsonb_agg(jsonb_build_object(
                        'position', f.position, 'values', f.values, 'properties', f.properties,
                        'invoice_display_name', f.invoice_display_name) order by f.position)
                     from charge_filters f where f.charge_id = c.id), '[]'::jsonb)::text
             as filters
"""
# The current charges of plans (open rows, tasks/catalog/plan_versions.py), keyed by plan id ...
_CHARGES = text(
    _CHARGE_COLUMNS
    + """, c.plan_id as key
    from charges c
    where c.plan_id = any(cast(:plans as bigint[])) and c.effective_to is null
    order by c.plan_id, c.position
    """
)
# ... or the charges of given plan versions (those open when the version started), by version id.
_VERSION_CHARGES = text(
    _CHARGE_COLUMNS
    + """, v.id as key
    from plan_versions v
    join charges c on c.plan_id = v.plan_id and c.effective_from <= v.effective_from
      and (c.effective_to is null or c.effective_to > v.effective_from)
    where v.id = any(cast(:versions as bigint[]))
    order by v.id, c.position
    """
)


def load_charges(
    conn: Connection,
    plan_ids: Iterable[int],
    metrics: Mapping[int, MetricInfo],
    versions: Iterable[int] | None = None,
) -> dict[int, list[ChargeInfo]]:
    """Current charges per plan id, with charge filters expanded against their metric's
    filters; or, given ``versions``, the charges of those plan versions per version id."""
    plans: dict[int, list[ChargeInfo]] = defaultdict(list)
    rows = (conn.execute(_CHARGES, {"plans": sorted(set(plan_ids))}) if versions is None
            else conn.execute(_VERSION_CHARGES, {"versions": sorted(set(versions))}))
    for row in rows:
        metric = metrics[row.billable_metric_id]
        filters = tuple(
            FilterInfo(
                position=f["position"],
                values=f["values"],
                properties=f["properties"] or {},
                invoice_display_name=f["invoice_display_name"],
                charge_filter=charge_filter_from_values(f["values"], metric.filters),
                pricing=pricing_of(
                    row.charge_model, f["properties"] or loads_exact(row.properties)
                ),
            )
            for f in loads_exact(row.filters)
        )
        properties = loads_exact(row.properties) or {}
        plans[row.key].append(
            ChargeInfo(
                id=row.id,
                position=row.position,
                metric=metric,
                charge_model=row.charge_model,
                properties=properties,
                invoice_display_name=row.invoice_display_name,
                pricing_group_keys=tuple(row.pricing_group_keys or ()),
                filters=filters,
                pricing=pricing_of(row.charge_model, properties),
                prorated=bool(row.prorated),
                pay_in_advance=bool(row.pay_in_advance),
                invoiceable=bool(row.invoiceable),
                regroup_paid_fees=row.regroup_paid_fees,
            )
        )
    return plans


# --------------------------------------------------------------------------------------------
# Reading what pricing needs, consistently
# --------------------------------------------------------------------------------------------


@dataclass
class RatingInputs:
    """Everything priced in one consistent read (one REPEATABLE READ transaction)."""

    metrics: dict[int, MetricInfo]
    subscriptions: dict[int, SubscriptionInfo]
    periods: dict[int, BillingPeriod]
    charges: dict[int, list[ChargeInfo]]
    states: StoredStates
    marks: dict[int, int]
    # Charges of the periods already on a finalized invoice: the version it names, per
    # subscription id (tasks/catalog/plan_versions.py); every other period prices with ``charges``.
    frozen: dict[int, list[ChargeInfo]] = field(default_factory=dict)
    # What the fold kept beside the states (unbillable counts, sample ids), per subscription
    tallies: StoredTallies = field(default_factory=dict)

    def charges_of(self, sub: SubscriptionInfo) -> list[ChargeInfo]:
        """The charges that price ``sub``'s period here (docs/architecture.md §6)."""
        if sub.id in self.frozen:
            return self.frozen[sub.id]
        return self.charges.get(sub.plan_id, [])


def read_inputs(conn: Connection, subs: Sequence[SubscriptionInfo], at: datetime) -> RatingInputs:
    """States (stored + not yet folded) of ``subs`` for the period containing ``at``."""
    metrics = load_metrics(conn)
    periods = {s.id: s.period_at(at) for s in subs}
    recurring = [m.id for m in metrics.values() if m.recurring]
    wanted = {sub_id: period.period_start for sub_id, period in periods.items()}
    tallies: StoredTallies = {}
    stored = read_states(conn, metrics, wanted, recurring, tallies)
    by_id = {s.id: s for s in subs}
    pending = fold_pending_events(conn, metrics, by_id, periods, recurring, tallies)
    marks = {
        int(r.subscription_id): int(r.fold_id)
        for r in conn.execute(
            text(
                "select subscription_id, fold_id from usage_marks"
                " where subscription_id = any(cast(:ids as bigint[]))"
            ),
            {"ids": list(by_id)},
        )
    }
    charges = load_charges(conn, {s.plan_id for s in subs}, metrics)
    frozen_versions = finalized_versions(conn, wanted)
    frozen: dict[int, list[ChargeInfo]] = {}
    if frozen_versions:
        by_version = load_charges(conn, (), metrics, frozen_versions.values())
        frozen = {sub_id: by_version.get(v, []) for sub_id, v in frozen_versions.items()}
    return RatingInputs(metrics, by_id, periods, charges, merge_stored(stored, pending), marks,
                        frozen, tallies)


def event_values_reader(
    conn: Connection, sub: SubscriptionInfo, period: BillingPeriod
) -> EventValues:
    """Per-event units in time order for charges that price each event (percentage with
    free units or per-transaction min/max): those cannot be folded, so they are read."""
    cache: dict[int, list[tuple[EventPoint, Decimal | None]]] = {}

    def values(
        charge: ChargeInfo, bucket: BucketId, group: tuple[str | None, ...]
    ) -> list[Decimal]:
        metric = charge.metric
        if metric.id not in cache:
            rows = conn.execute(
                text(
                    """
                    select "timestamp", id, properties::text as properties,
                           precise_total_amount_cents
                    from events
                    where external_subscription_id = :sub and code = :code
                      and "timestamp" between :start and :end
                      and voided_at is null
                    """
                ),
                {
                    "sub": sub.external_id,
                    "code": metric.code,
                    "start": period.charges_from,
                    "end": period.charges_to,
                },
            )
            points = [
                EventPoint.from_event(
                    timestamp=r.timestamp,
                    seq=int(r.id),
                    properties=loads_exact(r.properties),
                    field_name=metric.field_name,
                    precise_total_amount_cents=r.precise_total_amount_cents,
                )
                for r in rows
            ]
            kind = definition_of(metric.aggregation_type)
            cache[metric.id] = [(p, kind.event_value(p))
                                for p in sorted(points, key=lambda p: p.order_key)]
        out: list[Decimal] = []
        for point, units in cache[metric.id]:
            if units is None:
                continue
            if assign_bucket(charge.charge_filters, point.properties) != bucket:
                continue
            if tuple(point.properties.get(k) for k in charge.pricing_group_keys) != group:
                continue
            out.append(units)
        return out

    return values


def current_usage(
    engine: Engine, external_subscription_id: str, at: datetime
) -> CustomerUsage:
    """Lago ``customer_usage`` for the period containing ``at``, with every event so far."""
    return rated_usage(engine, external_subscription_id, at).as_lago()


def rated_usage(engine: Engine, external_subscription_id: str, at: datetime) -> SubscriptionUsage:
    """The usage of the period containing ``at`` with every event so far; ``LookupError`` for
    an unknown subscription, ``ValueError`` when ``at`` is outside its life."""
    return _rated(engine, external_subscription_id, at, projected=False)[0]


def projected_usage(engine: Engine, external_subscription_id: str, at: datetime
                    ) -> ProjectedUsage:
    """Lago's ``customer_projected_usage``: the current usage (``current_usage``) and, rated
    by the same code from the same states, the usage projected to the period's end
    (models/rating/projection.py). Errors as ``rated_usage``."""
    current, projected, ratio = _rated(engine, external_subscription_id, at, projected=True)
    assert projected is not None
    return cast(ProjectedUsage, with_projection(current.as_lago(), projected.as_lago(), ratio))


def _rated(engine: Engine, external_subscription_id: str, at: datetime, *, projected: bool
           ) -> tuple[SubscriptionUsage, SubscriptionUsage | None, Decimal]:
    """The usage so far and, when asked, projected (both from one snapshot), and the ratio."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            sub = in_force(load_subscription_rows(conn, [external_subscription_id]), at)
            if sub is None:
                raise LookupError(f"unknown subscription {external_subscription_id!r}")
            inputs = read_inputs(conn, [sub], at)
            period = inputs.periods[sub.id]
            charges, states = inputs.charges_of(sub), inputs.states.get(sub.id, {})
            values = event_values_reader(conn, sub, period)
            usage = rate_subscription(sub, charges, period, states, values,
                                      inputs.tallies.get(sub.id, {}))
            if not projected:
                return usage, None, Decimal(1)
            ratio = period_ratio(period.from_datetime, period.to_datetime, at, sub.timezone)
            return usage, rate_subscription(sub, charges, period, states, values,
                                            project=projector(ratio)), ratio


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def due_subscriptions(
    engine: Engine, as_of: datetime, only: Sequence[str] | None = None,
    change_set: datetime | None = None,
) -> list[int]:
    """Active subscriptions whose usage may have changed since their last snapshot.

    Changed = no snapshot yet for the period containing ``as_of`` (a new period), a fold
    touched the subscription after that snapshot's watermark (new events), or the catalog
    behind it changed (plan, metrics, customer, subscription updated_at). A past hour (one at
    or before the subscription's latest snapshot: a rerun or a backfill) is recomputed too, so
    it stores its own snapshot -- unless that hour's own row is there with a current watermark
    and catalog time (same states, same catalog: the same row), so a rerun with nothing new
    prices nothing and reports the hour from its rows (``usage_as_of``). An explicit list
    (``only``) is always recomputed: that is how an hour is reproduced on demand.

    ``change_set`` (an hour whose set ``open_change_set`` took): only its members are looked
    at (docs/architecture.md §24); a full set looks at every subscription.
    """
    with engine.connect() as conn:
        within = (None if change_set is None or only is not None
                  else change_set_members(conn, change_set))
        rows = (load_subscription_rows(conn, only) if within is None
                else load_subscription_rows(conn, ids=within) if within else [])
        active = [
            s
            for s in rows
            if s.subscription_at <= as_of and (s.terminated_at is None or s.terminated_at >= as_of)
        ]
        if only is not None:
            return sorted(s.id for s in active)
        periods = {s.id: s.period_at(as_of).period_start for s in active}
        last = {
            int(r.subscription_id): (int(r.fold_watermark), r.catalog_at, r.as_of,
                                     r.own_watermark, r.own_catalog_at)
            for r in conn.execute(
                text(
                    """
                    select a.subscription_id, s.fold_watermark, s.catalog_at, a.as_of,
                           o.fold_watermark as own_watermark, o.catalog_at as own_catalog_at
                    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[]))
                      as w(sid, ps)
                    join usage_amounts a on a.subscription_id = w.sid and a.period_start = w.ps
                    join usage_snapshots s on (s.id, s.as_of) = (a.snapshot_id, a.snapshot_as_of)
                    left join usage_snapshots o on a.as_of >= :as_of  -- a past hour's own
                      and o.subscription_id = w.sid and o.period_start = w.ps and o.as_of = :as_of
                    """
                ),
                {"subs": list(periods), "starts": list(periods.values()), "as_of": as_of},
            )
        }
        marks = {
            int(r.subscription_id): int(r.fold_id)
            for r in conn.execute(text(
                "select subscription_id, fold_id from usage_marks"
                " where cast(:ids as bigint[]) is null"
                " or subscription_id = any(cast(:ids as bigint[]))"),
                {"ids": None if within is None else [s.id for s in active]})
        }
    due: list[int] = []
    for sub in active:
        seen = last.get(sub.id)
        mark = marks.get(sub.id, 0)
        if seen is None or mark > seen[0] or sub.catalog_at > seen[1]:
            due.append(sub.id)
        elif seen[2] >= as_of and (seen[3] is None or mark > seen[3] or sub.catalog_at > seen[4]):
            due.append(sub.id)  # a past hour without its own current snapshot
    return sorted(due)


@dataclass
class SnapshotBatch:
    """What a batch stored: counts, the top amounts and totals per charge for the artifact."""

    snapshots: int
    amount_cents: int
    top: list[dict[str, Any]]
    per_charge: dict[str, int]
    # Unbillable events per subscription, metric and reason (models/rating/unbillable.py)
    unbillable: list[dict[str, Any]] = field(default_factory=list)
    # Subscriptions that failed alone and were contained (tasks/runs/containment.py), as plain
    # dicts.
    failed: list[ContainedFailure] = field(default_factory=list)


_SNAPSHOT_COLUMNS: Final = (
    "subscription_id",
    "external_subscription_id",
    "period_start",
    "period_end",
    "as_of",
    "fold_watermark",
    "catalog_at",
    "currency",
    "amount_cents",
    "precise_amount_cents",
    "events_count",
    "usage",
    "flow_run_id",
    "arrears_cents",  # what the deductions take (usage_amounts), not a snapshot column
    "arrears_precise",
)
_SNAPSHOT_STAGE = text(
    """
    create temp table tf_snapshot_stage (
      subscription_id bigint, external_subscription_id text, period_start timestamptz,
      period_end timestamptz, as_of timestamptz, fold_watermark bigint,
      catalog_at timestamptz, currency text, amount_cents numeric,
      precise_amount_cents numeric, events_count bigint, usage jsonb, flow_run_id text,
      arrears_cents numeric, arrears_precise numeric
    ) on commit drop
    """
)
_UPSERT_SNAPSHOT = text(
    """
    insert into usage_snapshots (subscription_id, external_subscription_id, period_start,
      period_end, as_of, fold_watermark, catalog_at, currency, amount_cents,
      precise_amount_cents, events_count, usage, flow_run_id)
    select subscription_id, external_subscription_id, period_start, period_end, as_of,
           fold_watermark, catalog_at, currency, amount_cents, precise_amount_cents,
           events_count, usage, flow_run_id
    from tf_snapshot_stage order by subscription_id
    on conflict (subscription_id, period_start, as_of) do update set
      fold_watermark = excluded.fold_watermark, catalog_at = excluded.catalog_at,
      currency = excluded.currency, amount_cents = excluded.amount_cents,
      precise_amount_cents = excluded.precise_amount_cents,
      events_count = excluded.events_count, usage = excluded.usage,
      flow_run_id = excluded.flow_run_id, created_at = now()
    """
)

# Deductions take charges in arrears only (in advance: paid per event), from the COPY stage.
_UPSERT_AMOUNTS = text(
    """
    insert into usage_amounts as a (subscription_id, period_start, external_subscription_id,
      period_end, as_of, currency, amount_cents, precise_amount_cents, snapshot_id, snapshot_as_of)
    select s.subscription_id, s.period_start, s.external_subscription_id, s.period_end,
           s.as_of, s.currency, k.arrears_cents, k.arrears_precise, s.id, s.as_of
    from tf_snapshot_stage k join usage_snapshots s on s.subscription_id = k.subscription_id
      and s.period_start = k.period_start and s.as_of = k.as_of
    where s.as_of = :as_of  -- the batch's hour: one partition, chosen while planning
    order by s.subscription_id
    on conflict (subscription_id, period_start) do update set
      external_subscription_id = excluded.external_subscription_id,
      period_end = excluded.period_end, as_of = excluded.as_of, currency = excluded.currency,
      amount_cents = excluded.amount_cents, precise_amount_cents = excluded.precise_amount_cents,
      snapshot_id = excluded.snapshot_id, snapshot_as_of = excluded.snapshot_as_of,
      updated_at = now()
    where a.as_of <= excluded.as_of
    """
)


def snapshot_subscriptions(
    engine: Engine,
    subscription_ids: Sequence[int],
    as_of: datetime,
    flow_run_id: str | None = None,
    top: int = 10,
) -> SnapshotBatch:
    """Compute and store the current usage of these subscriptions as of ``as_of``.

    Reads in one REPEATABLE READ transaction (state, pending events and watermarks agree),
    writes snapshots and the per-period amounts in one transaction; the unique key
    (subscription, period, as_of) makes a rerun replace its own rows.
    """
    rated = _rate_snapshots(engine, subscription_ids, as_of, flow_run_id)
    rows = sorted(rated.rows, key=lambda r: r["subscription_id"])
    failpoint("usage.after_snapshot_read")
    with engine.begin() as conn:
        if rows:
            _store_snapshots(conn, rows, as_of)
        failpoint("usage.before_snapshot_commit")
    failpoint("usage.after_snapshot_commit")
    ranked = sorted(rows, key=lambda r: (-r["amount_cents"], r["external_subscription_id"]))
    return SnapshotBatch(
        snapshots=len(rows),
        amount_cents=sum(r["amount_cents"] for r in rows),
        top=[
            {
                "subscription": r["external_subscription_id"],
                "amount_cents": r["amount_cents"],
                "currency": r["currency"],
                "events_count": r["events_count"],
            }
            for r in ranked[:top]
        ],
        per_charge=dict(rated.per_charge),
        unbillable=rated.unbillable,
    )


@dataclass
class _RatedBatch:
    """A batch rated from one consistent read: its snapshot rows (``_SNAPSHOT_COLUMNS``), the
    totals per charge and the unbillable events, for the artifact."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    per_charge: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unbillable: list[dict[str, Any]] = field(default_factory=list)


def _rate_snapshots(
    engine: Engine, subscription_ids: Sequence[int], as_of: datetime, flow_run_id: str | None
) -> _RatedBatch:
    """Read the state, pending events and watermarks in one REPEATABLE READ transaction and
    rate each subscription with the pure ``rate_subscription``."""
    out = _RatedBatch()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            wanted = set(subscription_ids)
            subs = load_subscription_rows(conn, ids=list(wanted))
            inputs = read_inputs(conn, subs, as_of)
            for sub in subs:
                failpoint("usage.rate_subscription", sub)
                period = inputs.periods[sub.id]
                usage = rate_subscription(
                    sub,
                    inputs.charges_of(sub),
                    period,
                    inputs.states.get(sub.id, {}),
                    event_values_reader(conn, sub, period),
                    inputs.tallies.get(sub.id, {}),
                )
                out.unbillable.extend({"subscription": sub.external_id, **u.as_json()}
                                      for u in usage.unbillable)
                for charge in usage.charges:
                    name = f"{charge.display_name} ({charge.charge.metric.code})"
                    out.per_charge[name] += charge.line.amount_cents
                out.rows.append(
                    {
                        "subscription_id": sub.id,
                        "external_subscription_id": sub.external_id,
                        "period_start": period.period_start,
                        "period_end": period.period_end,
                        "as_of": as_of,
                        "fold_watermark": inputs.marks.get(sub.id, 0),
                        "catalog_at": sub.catalog_at,
                        "currency": sub.currency,
                        "amount_cents": usage.amount_cents,
                        "precise_amount_cents": usage.precise_amount_cents,
                        "events_count": usage.events_count,
                        # integers beyond 64 bits (cents of a huge usage) as exact numbers:
                        # docs/architecture.md §7
                        "usage": number_rule.dumps(usage.as_lago()).decode(),
                        "flow_run_id": flow_run_id,
                    }
                )
                out.rows[-1]["arrears_cents"], out.rows[-1]["arrears_precise"] = (
                    usage.in_arrears()
                )
    return out


def _store_snapshots(conn: Connection, rows: Sequence[dict[str, Any]], as_of: datetime) -> None:
    """COPY into a stage, then one upsert of the snapshots and one of the per-period amounts:
    10,000 jsonb rows in a fraction of a second."""
    conn.execute(_SNAPSHOT_STAGE)
    pg = conn.connection.driver_connection
    columns = ", ".join(_SNAPSHOT_COLUMNS)
    with pg.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f"copy tf_snapshot_stage ({columns}) from stdin") as copy:
            for row in rows:
                copy.write_row([row[c] for c in _SNAPSHOT_COLUMNS])
    conn.execute(_UPSERT_SNAPSHOT)
    conn.execute(_UPSERT_AMOUNTS, {"as_of": as_of})


STEP = "usage-snapshot"


def snapshot_contained(
    engine: Engine,
    subscription_ids: Sequence[int],
    as_of: datetime,
    flow_run_id: str | None = None,
    top: int = 10,
) -> SnapshotBatch:
    """``snapshot_subscriptions`` for a batch, with a failure contained to its subscription.

    The batch runs as one transaction as before; only if it fails for a reason of its own
    (not transient) is it bisected, so every other subscription's snapshot commits and the
    ones that fail alone are returned in ``failed`` with their error (tasks/runs/containment.py).
    Their previous snapshot stays as it was: the deductions and the close are told to leave
    their customers alone this hour (flows/billing.py).
    """
    parts, failed = contain(
        list(subscription_ids),
        lambda part: snapshot_subscriptions(engine, part, as_of, flow_run_id, top),
    )
    batch = _merge(parts, top)
    if failed:
        with engine.connect() as conn:
            names = names_of(conn, "subscription", [sub_id for sub_id, _ in failed])
        batch.failed = []
        for sub_id, exc in failed:
            external_id, customer = names.get(sub_id, (None, None))
            batch.failed.append(failure(STEP, "subscription", sub_id, external_id, customer, exc))
    return batch


def _merge(parts: Sequence[SnapshotBatch], top: int) -> SnapshotBatch:
    if len(parts) == 1:
        return parts[0]
    per_charge: dict[str, int] = defaultdict(int)
    for part in parts:
        for name, cents in part.per_charge.items():
            per_charge[name] += cents
    return SnapshotBatch(
        snapshots=sum(p.snapshots for p in parts),
        amount_cents=sum(p.amount_cents for p in parts),
        top=sorted((row for p in parts for row in p.top),
                   key=lambda r: (-r["amount_cents"], r["subscription"]))[:top],
        per_charge=dict(per_charge),
        unbillable=[u for part in parts for u in part.unbillable],
    )


# --------------------------------------------------------------------------------------------
# Prefect tasks (thin wrappers; the functions above are tested without Prefect)
# --------------------------------------------------------------------------------------------

_RETRIES = transient_retries(retries=3, backoff_factor=1)


@task(name="fold-new-objects", **_RETRIES)
def fold_new_objects_task() -> FoldFigures:
    """Fold every ingested object not folded yet (exactly once, see tallyflow.tasks.folding)."""
    summary: FoldSummary = fold_pending(billing_engine())
    return summary.as_dict()


@task(name="customer-of", **_RETRIES)
def customer_of_task(external_subscription_id: str) -> str | None:
    """The external id of the subscription's customer (None for an unknown subscription)."""
    with billing_engine().connect() as conn:
        return conn.execute(
            text(
                "select c.external_id from subscriptions s join customers c"
                " on c.id = s.customer_id where s.external_id = :s"
            ),
            {"s": external_subscription_id},
        ).scalar()


@task(name="usage-as-of", **_RETRIES)
def usage_as_of_task(as_of: datetime) -> dict[str, int]:
    return usage_as_of(billing_engine(), as_of)


@task(name="due-subscriptions", **_RETRIES)
def due_subscriptions_task(as_of: datetime, only: list[str] | None = None,
                           change_set: datetime | None = None) -> list[int]:
    return due_subscriptions(billing_engine(), as_of, only, change_set)


@task(name="snapshot-usage", task_run_name="snapshot-usage-{first_id}", **_RETRIES)
def snapshot_task(
    subscription_ids: list[int], as_of: datetime, first_id: int, flow_run_id: str | None = None
) -> SnapshotBatch:
    """Snapshot one batch of subscriptions (``first_id`` only names the task run); one that
    fails alone is contained and reported, the others commit."""
    return snapshot_contained(billing_engine(), subscription_ids, as_of, flow_run_id)
