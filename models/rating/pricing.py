"""Pricing one subscription: keyed aggregation states + the plan's charges -> usage and money.

Pure (no I/O, no Prefect): the task layer reads the states, the charges and, for the few charges
that price each event, the per-event values, and hands them here. The result is typed
(:class:`SubscriptionUsage` down to :class:`UsageLine`); ``as_lago()`` gives Lago's
``customer_usage`` object, the shape that is stored and shown.

Charge filters bucket the keyed states after folding, then each (filter bucket, pricing group)
is priced by its charge model and rounded to cents once, ROUND_HALF_UP, as Lago rounds each fee
(docs/architecture.md §3, invariant 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from tallyflow.models.lago import resources as lago
from tallyflow.models.lago.money import plain
from tallyflow.models.lago.times import iso
from tallyflow.models.rating.aggregation import (
    AggregationType,
    AnyState,
    aggregate,
    empty_state,
)
from tallyflow.models.rating.aggregation import (
    definition_of as aggregation_of,
)
from tallyflow.models.rating.charge_models import (
    ChargeProperties,
    Fee,
    compute_charge,
    compute_prorated,
    definition_of,
    needs_event_values,
    parse_properties,
)
from tallyflow.models.rating.filters import (
    BucketId,
    ChargeFilter,
    FilterKey,
    GroupKey,
    MetricFilter,
    assign_bucket,
    bucket_states,
)
from tallyflow.models.rating.money import WIDE
from tallyflow.models.rating.periods import (
    ONE_MICROSECOND,
    BillingPeriod,
    period_containing,
    proration_window,
)
from tallyflow.models.rating.unbillable import StateTally, Unbillable, unbillable_of

ZERO: Final = Decimal(0)

GroupValues = tuple[tuple[str, str | None], ...]
"""A state's pricing-group values for the union of its metric's group keys, sorted by key."""
StateKey = tuple[int, datetime, FilterKey, GroupValues]
"""(billable_metric_id, period_start, filter key, group values) within one subscription."""

# --------------------------------------------------------------------------------------------
# The catalog as the pricing code needs it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """A billable metric with its filters and the union of pricing-group keys of its charges.

    The union is what state is keyed by, so every charge on the metric can regroup it.
    """

    id: int
    code: str
    name: str
    aggregation_type: AggregationType
    field_name: str | None
    recurring: bool
    rounding_function: str | None
    rounding_precision: int | None
    filters: tuple[MetricFilter, ...]
    group_keys: tuple[str, ...]
    updated_at: datetime


@dataclass(frozen=True)
class SubscriptionInfo:
    """What a subscription's billing periods and currency depend on."""

    id: int
    external_id: str
    plan_id: int
    interval: str
    billing_time: str
    subscription_at: datetime
    terminated_at: datetime | None
    timezone: str | None
    currency: str
    catalog_at: datetime
    # a plan change's row starts at the change but counts periods from the original start
    anchor_at: datetime | None = None

    def period_at(self, at: datetime) -> BillingPeriod:
        return _period(
            at,
            self.interval,
            self.billing_time,
            self.subscription_at,
            self.timezone,
            self.terminated_at,
            self.anchor_at,
        )

    def periods_between(self, start: datetime, end: datetime) -> list[BillingPeriod]:
        """Periods overlapping [start, end], clipped to the subscription's life."""
        low = max(start, self.subscription_at)
        high = end if self.terminated_at is None else min(end, self.terminated_at)
        periods: list[BillingPeriod] = []
        moment = low
        while moment <= high:
            period = self.period_at(moment)
            periods.append(period)
            moment = period.period_end + ONE_MICROSECOND
        return periods


@lru_cache(maxsize=65_536)
def _period(
    at: datetime,
    interval: str,
    billing_time: str,
    subscription_at: datetime,
    timezone: str | None,
    terminated_at: datetime | None,
    anchor_at: datetime | None = None,
) -> BillingPeriod:
    """Memoised ``period_containing``: hourly runs ask the same question for many
    subscriptions (same as_of, same plan) and the answer is immutable."""
    return period_containing(at, interval, billing_time, subscription_at, timezone, terminated_at,
                             anchor_at)


@dataclass(frozen=True)
class Pricing:
    """Charge properties parsed once per read, not once per subscription and bucket."""

    properties: ChargeProperties | None
    needs_event_values: bool


def pricing_of(charge_model: str, properties: Mapping[str, Any]) -> Pricing:
    """Parse a charge's (or a charge filter's) properties for its charge model."""
    if not properties and definition_of(charge_model).needs_properties:
        # A default bucket without charge-level properties prices at 0 (Lago).
        return Pricing(None, False)
    parsed = parse_properties(charge_model, properties)
    return Pricing(parsed, needs_event_values(charge_model, parsed))


@dataclass(frozen=True)
class FilterInfo:
    """A charge filter as priced: its Lago payload (echoed in the usage) and its parsed form."""

    position: int
    values: dict[str, list[str]]
    properties: dict[str, Any]
    invoice_display_name: str | None
    charge_filter: ChargeFilter
    pricing: Pricing


@dataclass(frozen=True)
class ChargeInfo:
    """A plan's charge as priced, its metric, filters and properties parsed once per read."""

    id: int
    position: int
    metric: MetricInfo
    charge_model: str
    properties: dict[str, Any]
    invoice_display_name: str | None
    pricing_group_keys: tuple[str, ...]
    filters: tuple[FilterInfo, ...]
    pricing: Pricing
    # Lago's ``prorated``: a recurring sum's or unique count's units billed for the share of
    # the period they existed (catalog rules in models/catalog/prorated.py)
    prorated: bool = False
    # Paid in advance: billed per event (models/rating/in_advance.py), so the hourly usage
    # deductions and the period-end invoice leave it out; current usage still shows it.
    pay_in_advance: bool = False
    invoiceable: bool = True
    regroup_paid_fees: str | None = None
    bucket_cache: dict[FilterKey, BucketId] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def charge_filters(self) -> list[ChargeFilter]:
        return [f.charge_filter for f in self.filters]

    def bucket_of(self, filter_key: FilterKey) -> BucketId:
        """The charge filter an event with these metric filter values goes to (memoised:
        there are few distinct keys and thousands of subscriptions share them)."""
        if filter_key not in self.bucket_cache:
            self.bucket_cache[filter_key] = assign_bucket(self.charge_filters, dict(filter_key))
        return self.bucket_cache[filter_key]

    def buckets(
        self, keyed: Iterable[tuple[FilterKey, tuple[str | None, ...], AnyState]]
    ) -> dict[BucketId, dict[tuple[str | None, ...], AnyState]]:
        """The charge's buckets of ``keyed`` states, with the memoised bucket assignment."""
        return bucket_states(self.bucket_of, keyed, merge_states)


def merge_states(left: AnyState, right: AnyState) -> AnyState:
    """Merge two states of the same aggregation (the caller keys states by metric)."""
    return left.merge(right)


# --------------------------------------------------------------------------------------------
# Typed results
# --------------------------------------------------------------------------------------------


@dataclass
class UsageLine:
    """Units, events and money of one fee or a sum of fees (cents already rounded per fee)."""

    units: Decimal = ZERO
    events_count: int = 0
    amount_cents: int = 0
    precise_amount_cents: Decimal = ZERO

    @classmethod
    def of(cls, fee: Fee) -> UsageLine:
        line = cls()
        line.add(fee)
        return line

    def add(self, fee: Fee) -> None:
        # WIDE: sums of quantities and precise amounts are never rounded to 28 digits
        self.units = WIDE.add(self.units, fee.units)
        self.events_count += fee.events_count
        self.amount_cents += fee.amount_cents
        self.precise_amount_cents = WIDE.add(self.precise_amount_cents, fee.precise_amount_cents)

    def add_line(self, other: UsageLine) -> None:
        self.units = WIDE.add(self.units, other.units)
        self.events_count += other.events_count
        self.amount_cents += other.amount_cents
        self.precise_amount_cents = WIDE.add(
            self.precise_amount_cents, other.precise_amount_cents
        )

    def as_lago(self) -> lago.UsageFigures:
        return {
            "units": plain(self.units),
            "events_count": self.events_count,
            "amount_cents": self.amount_cents,
            "precise_amount_cents": plain(self.precise_amount_cents),
        }


@dataclass(frozen=True)
class FilterUsage:
    """One charge filter's bucket (``values`` None: the default bucket)."""

    line: UsageLine
    invoice_display_name: str | None
    values: Mapping[str, list[str]] | None

    def as_lago(self) -> lago.FilterUsage:
        values = None if self.values is None else dict(self.values)
        return {
            **self.line.as_lago(),
            "invoice_display_name": self.invoice_display_name,
            "values": values,
        }


@dataclass(frozen=True)
class GroupUsage:
    """One pricing group of a charge (Lago ``grouped_usage``), with its filter buckets."""

    line: UsageLine
    grouped_by: Mapping[str, str | None]
    filters: tuple[FilterUsage, ...]

    def as_lago(self) -> lago.GroupUsage:
        return {
            **self.line.as_lago(),
            "grouped_by": dict(self.grouped_by),
            "filters": [f.as_lago() for f in self.filters],
        }


@dataclass(frozen=True)
class ChargeUsage:
    """One charge of the plan, priced: its total, its filter buckets and pricing groups."""

    charge: ChargeInfo
    line: UsageLine
    currency: str
    filters: tuple[FilterUsage, ...]
    grouped_usage: tuple[GroupUsage, ...]

    @property
    def display_name(self) -> str:
        return self.charge.invoice_display_name or self.charge.metric.name

    def as_lago(self) -> lago.ChargeUsage:
        metric = self.charge.metric
        return {
            **self.line.as_lago(),
            "amount_currency": self.currency,
            "charge": {
                "lago_id": str(self.charge.id),
                "charge_model": self.charge.charge_model,
                "invoice_display_name": self.display_name,
            },
            "billable_metric": {
                "lago_id": str(metric.id),
                "name": metric.name,
                "code": metric.code,
                "aggregation_type": metric.aggregation_type.value,
            },
            "filters": [f.as_lago() for f in self.filters],
            "grouped_usage": [g.as_lago() for g in self.grouped_usage],
        }


@dataclass(frozen=True)
class SubscriptionUsage:
    """A subscription's usage and money for one period (Lago ``customer_usage``)."""

    external_subscription_id: str
    period: BillingPeriod
    currency: str
    charges: tuple[ChargeUsage, ...]
    # Events of the period that bill nothing, per metric and reason (models/rating/unbillable.py)
    unbillable: tuple[Unbillable, ...] = ()

    @property
    def amount_cents(self) -> int:
        return sum(c.line.amount_cents for c in self.charges)

    @property
    def precise_amount_cents(self) -> Decimal:
        total = ZERO
        for charge in self.charges:
            total = WIDE.add(total, charge.line.precise_amount_cents)
        return total

    @property
    def events_count(self) -> int:
        return sum(c.line.events_count for c in self.charges)

    def in_arrears(self) -> tuple[int, Decimal]:
        """Cents and precise cents of the charges not paid in advance: what the hourly wallet
        deductions take (the others are paid per event, tasks/invoicing/advance/charges.py)."""
        charges = [c for c in self.charges if not c.charge.pay_in_advance]
        precise = ZERO
        for charge in charges:
            precise = WIDE.add(precise, charge.line.precise_amount_cents)
        return sum(c.line.amount_cents for c in charges), precise

    def as_lago(self) -> lago.CustomerUsage:
        period = self.period
        usage: lago.CustomerUsage = {
            "external_subscription_id": self.external_subscription_id,
            "from_datetime": iso(period.from_datetime),
            "to_datetime": iso(period.to_datetime),
            "issuing_date": (period.end_date + timedelta(days=1)).isoformat(),
            "currency": self.currency,
            "amount_cents": self.amount_cents,
            "precise_amount_cents": plain(self.precise_amount_cents),
            "taxes_amount_cents": 0,
            "total_amount_cents": self.amount_cents,
            "events_count": self.events_count,
            "charges_usage": [c.as_lago() for c in self.charges],
        }
        # A Tallyflow extension (Lago clients ignore unknown keys), only when there is
        # something to say, so a clean period reads exactly as Lago's.
        if self.unbillable:
            usage["tallyflow_unbillable"] = [u.as_json() for u in self.unbillable]
        return usage


# --------------------------------------------------------------------------------------------
# Pricing one subscription
# --------------------------------------------------------------------------------------------

EventValues = Callable[[ChargeInfo, BucketId, tuple[str | None, ...]], list[Decimal]]
Projector = Callable[[Decimal], Decimal]
"""Units so far -> units projected to the period's end (models/rating/projection.py)."""
"""Per-event units of one (charge, filter bucket, pricing group), in time order; read by the
task layer only for the charges that price each event (``Pricing.needs_event_values``)."""


def price_state(
    charge: ChargeInfo,
    pricing: Pricing,
    state: AnyState,
    period: BillingPeriod,
    initial_level: Decimal,
    currency: str,
    values: Callable[[], list[Decimal]],
    project: Projector | None = None,
) -> Fee:
    """One fee: the state's units priced by the charge model with these properties.
    ``project``: the units to the period's end first (projected usage; a recurring metric's
    units are its projection already, as Lago's ``Fees::ProjectionService`` has them)."""
    metric = charge.metric
    kind = aggregation_of(metric.aggregation_type)
    units = aggregate(
        state,
        window=period.weighted_window() if kind.needs_window else None,
        initial_level=initial_level,
        rounding_function=metric.rounding_function,
        rounding_precision=metric.rounding_precision,
    )
    if project is not None and not metric.recurring:
        units = project(units)
    if pricing.properties is None:
        return Fee.from_amount(ZERO, currency, units, state.events_count)
    if charge.prorated and kind.prorates:
        # the fee shows the full units and prices the prorated ones (Lago's fee units)
        prorated = replace(kind.prorate(state, proration_window(period)), full=units)
        result = compute_prorated(pricing.properties, prorated, state.events_count)
        return Fee.from_amount(result.amount, currency, units, state.events_count)
    event_values = values() if pricing.needs_event_values else None
    precise = kind.precise_total_amount_cents(state)
    result = compute_charge(
        charge.charge_model,
        pricing.properties,
        units,
        events_count=state.events_count,
        event_values=event_values,
        precise_total_amount_cents=precise,
        currency=currency,
    )
    return Fee.from_amount(result.amount, currency, units, state.events_count)


def rate_subscription(
    sub: SubscriptionInfo,
    charges: Sequence[ChargeInfo],
    period: BillingPeriod,
    states: Mapping[StateKey, AnyState],
    event_values: EventValues | None = None,
    tallies: Mapping[StateKey, StateTally] | None = None,
    project: Projector | None = None,
) -> SubscriptionUsage:
    """A subscription's usage for ``period``: every charge, every filter bucket (zero ones and
    the default bucket included) and every pricing group with usage.

    ``states`` holds the subscription's keyed states for ``period`` (and, for recurring
    metrics, the earlier periods); ``tallies`` what the fold kept beside them (the
    ``not_a_number`` counts and sample ids behind ``unbillable``).
    """
    return SubscriptionUsage(
        external_subscription_id=sub.external_id,
        period=period,
        currency=sub.currency,
        charges=tuple(
            rate_charge(sub.currency, charge, period, states, event_values, project)
            for charge in charges
        ),
        unbillable=unbillable_of(charges, period.period_start, states, tallies or {}),
    )


def rate_charge(
    currency: str,
    charge: ChargeInfo,
    period: BillingPeriod,
    states: Mapping[StateKey, AnyState],
    event_values: EventValues | None = None,
    project: Projector | None = None,
) -> ChargeUsage:
    """One charge: its metric's states bucketed by charge filter and pricing group, priced."""
    metric = charge.metric
    kind = metric.aggregation_type
    definition = aggregation_of(kind)
    carry_all = metric.recurring and definition.carries_states
    current: list[tuple[FilterKey, GroupKey, AnyState]] = []
    earlier: list[tuple[FilterKey, GroupKey, AnyState]] = []
    for (metric_id, start, filter_key, group_values), state in states.items():
        if metric_id != metric.id:
            continue
        values = dict(group_values)
        keyed = (filter_key, tuple(values.get(k) for k in charge.pricing_group_keys), state)
        if start == period.period_start:
            current.append(keyed)
        elif start < period.period_start and metric.recurring:
            (current if carry_all else earlier).append(keyed)
    buckets = charge.buckets(current)
    levels: dict[BucketId, dict[tuple[str | None, ...], Decimal]] = {}
    if definition.carries_level and earlier:
        for bucket, groups in charge.buckets(earlier).items():
            levels[bucket] = {g: definition.level(s) for g, s in groups.items()}
            for group in groups:
                buckets.setdefault(bucket, {}).setdefault(group, empty_state(kind))
    order: list[BucketId] = [*range(len(charge.filters)), None] if charge.filters else [None]
    line = UsageLine()
    filters_out: list[FilterUsage] = []
    grouped: dict[tuple[str | None, ...], tuple[UsageLine, list[FilterUsage]]] = {}
    for bucket in order:
        pricing = charge.pricing if bucket is None else charge.filters[bucket].pricing
        groups = buckets.get(bucket) or {}
        if not groups and not charge.pricing_group_keys:
            groups = {(): empty_state(kind)}
        bucket_line = UsageLine()
        for group, state in sorted(groups.items(), key=lambda item: _sort_key(item[0])):
            fee = price_state(
                charge,
                pricing,
                state,
                period,
                levels.get(bucket, {}).get(group, ZERO),
                currency,
                _event_values_of(charge, bucket, group, event_values),
                project,
            )
            bucket_line.add(fee)
            if charge.pricing_group_keys:
                group_line, group_filters = grouped.setdefault(group, (UsageLine(), []))
                group_line.add(fee)
                if charge.filters:
                    group_filters.append(_filter_usage(charge, bucket, UsageLine.of(fee)))
        line.add_line(bucket_line)
        if charge.filters:
            filters_out.append(_filter_usage(charge, bucket, bucket_line))
    grouped_usage = tuple(
        GroupUsage(
            line=group_line,
            grouped_by=dict(zip(charge.pricing_group_keys, group, strict=True)),
            filters=tuple(group_filters),
        )
        for group, (group_line, group_filters) in sorted(
            grouped.items(), key=lambda item: _sort_key(item[0])
        )
    )
    return ChargeUsage(
        charge=charge,
        line=line,
        currency=currency,
        filters=tuple(filters_out),
        grouped_usage=grouped_usage,
    )


def _event_values_of(
    charge: ChargeInfo, bucket: BucketId, group: GroupKey, read: EventValues | None
) -> Callable[[], list[Decimal]]:
    """Read per-event values only if the charge model asks for them."""
    return lambda: read(charge, bucket, group) if read is not None else []


def _sort_key(group: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in group)


def _filter_usage(charge: ChargeInfo, bucket: BucketId, line: UsageLine) -> FilterUsage:
    if bucket is None:
        return FilterUsage(line=line, invoice_display_name=None, values=None)
    info = charge.filters[bucket]
    return FilterUsage(
        line=line, invoice_display_name=info.invoice_display_name, values=info.values
    )
