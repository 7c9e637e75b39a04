"""Pricing: units (and, for percentage and dynamic, event values) -> money.

Amounts are unrounded ``Decimal`` in major units, computed at 60 digits so products of large
unit counts and long prices stay exact before the single rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

from tallyflow.models.rating.charge_models.parsing import properties_from
from tallyflow.models.rating.charge_models.properties import (
    _PRICING,
    ONE,
    ZERO,
    ChargeModel,
    ChargeProperties,
    GraduatedPercentageProperties,
    GraduatedProperties,
    PackageProperties,
    PercentageProperties,
    PriceRange,
    RateRange,
    StandardProperties,
    VolumeProperties,
)
from tallyflow.models.rating.charge_models.results import (
    ChargeResult,
    PackageDetail,
    PercentageDetail,
    RangeDetail,
)
from tallyflow.models.rating.money import (
    from_minor,
)


def compute_charge(
    charge_model: ChargeModel | str,
    properties: ChargeProperties | Mapping[str, object],
    units: Decimal,
    *,
    events_count: int = 0,
    event_values: Sequence[Decimal] | None = None,
    precise_total_amount_cents: Decimal = ZERO,
    currency: str | None = None,
) -> ChargeResult:
    """Price ``units`` with a charge model.

    ``event_values`` (each event's units, in time order) is required only when
    :func:`needs_event_values` says so; ``precise_total_amount_cents`` and ``currency`` only
    for dynamic, whose events carry minor units of the subscription's currency (JPY has no
    cents: 1234.5 "cents" are 1234.5 yen). Negative units are priced as 0.
    """
    model = ChargeModel(charge_model)
    props = properties_from(model, properties)
    units = max(units, ZERO)
    with localcontext(_PRICING):
        if isinstance(props, StandardProperties):
            return ChargeResult(model, units, units * props.amount, events_count)
        if isinstance(props, PackageProperties):
            return _package(props, units, events_count)
        if isinstance(props, GraduatedProperties):
            ranges = _graduated_details(props.ranges, units)
            return ChargeResult(model, units, _sum_ranges(ranges), events_count, ranges)
        if isinstance(props, GraduatedPercentageProperties):
            ranges = _graduated_details(props.ranges, units)
            return ChargeResult(model, units, _sum_ranges(ranges), events_count, ranges)
        if isinstance(props, VolumeProperties):
            detail = _volume_detail(props.ranges, units)
            amount = detail.total_with_flat_amount
            return ChargeResult(model, units, amount, events_count, (detail,))
        if isinstance(props, PercentageProperties):
            return _percentage(props, units, events_count, event_values)
        return _dynamic(units, events_count, precise_total_amount_cents, currency)


def _dynamic(
    units: Decimal, events_count: int, precise_total_amount_cents: Decimal, currency: str | None
) -> ChargeResult:
    """The events' own amounts: precise minor units / the currency's subunit; 0 at 0 units
    (Lago's dynamic service returns 0 when there are no units)."""
    if currency is None:
        raise ValueError("dynamic pricing needs the currency of precise_total_amount_cents")
    amount = ZERO if units == 0 else from_minor(precise_total_amount_cents, currency)
    return ChargeResult(ChargeModel.DYNAMIC, units, amount, events_count)


def _package(props: PackageProperties, units: Decimal, events_count: int) -> ChargeResult:
    """ceil((units - free) / size) packages: a package is due from its first unit."""
    paid = max(units - props.free_units, ZERO)
    size = Decimal(props.package_size)
    count = paid // size + (ONE if paid % size else ZERO)
    detail = PackageDetail(
        free_units=min(units, Decimal(props.free_units)),
        paid_units=paid,
        package_size=props.package_size,
        package_count=count,
        per_package_unit_amount=props.amount,
    )
    return ChargeResult(
        ChargeModel.PACKAGE, units, count * props.amount, events_count, detail=detail
    )


def _graduated_details(
    ranges: Sequence[PriceRange | RateRange], units: Decimal
) -> tuple[RangeDetail, ...]:
    """Walk the tiers up to the one holding ``units``.

    Units in a tier are ``min(units, to) - previous_to``: with classic integer tiers
    (from = previous to + 1) that is Lago's ``min(units, to) - from + 1``; with adjacent decimal
    tiers (from = previous to) there is no +1. Each reached tier adds its flat amount; the
    first tier is always reached, so its flat amount is due even at 0 units (Lago #5760).
    """
    details: list[RangeDetail] = []
    previous_to = ZERO
    for tier in ranges:
        top = units if tier.to_value is None else min(units, tier.to_value)
        tier_units = max(top - previous_to, ZERO)
        details.append(_tier_detail(tier, tier_units))
        if tier.to_value is None or tier.to_value >= units:
            break
        previous_to = tier.to_value
    return tuple(details)


def _tier_detail(tier: PriceRange | RateRange, tier_units: Decimal) -> RangeDetail:
    if isinstance(tier, RateRange):
        per_unit = tier.rate.scaleb(-2)
    else:
        per_unit = tier.per_unit_amount
    total = tier_units * per_unit
    return RangeDetail(
        from_value=tier.from_value,
        to_value=tier.to_value,
        units=tier_units,
        per_unit_amount=per_unit,
        flat_unit_amount=tier.flat_amount,
        per_unit_total_amount=total,
        total_with_flat_amount=total + tier.flat_amount,
    )


def _sum_ranges(details: Sequence[RangeDetail]) -> Decimal:
    return sum((d.total_with_flat_amount for d in details), ZERO)


def volume_range(ranges: Sequence[PriceRange], units: Decimal) -> PriceRange:
    """The one tier pricing all units: ``from <= ceil(units)`` and ``units <= to`` (Lago)."""
    ceiling = units.to_integral_value(rounding=ROUND_CEILING)
    for tier in ranges:
        if tier.from_value <= ceiling and (tier.to_value is None or units <= tier.to_value):
            return tier
    return ranges[-1]


def _volume_detail(ranges: Sequence[PriceRange], units: Decimal) -> RangeDetail:
    """All units at one tier's price, plus its flat amount (due at 0 units too)."""
    tier = volume_range(ranges, units)
    total = units * tier.per_unit_amount
    return RangeDetail(
        from_value=tier.from_value,
        to_value=tier.to_value,
        units=units,
        per_unit_amount=tier.per_unit_amount,
        flat_unit_amount=tier.flat_amount,
        per_unit_total_amount=total,
        total_with_flat_amount=total + tier.flat_amount,
    )


@dataclass(frozen=True)
class _FreeWalk:
    free_value: Decimal
    free_events: int
    paying_values: tuple[Decimal, ...]


def _walk_free_units(props: PercentageProperties, values: Sequence[Decimal]) -> _FreeWalk:
    """Split events into free and paying, in time order.

    The first ``free_units_per_events`` events and the first ``free_units_per_total_aggregation``
    of value are free, whichever runs out first. The event that exhausts the free amount pays
    for its remainder (and its fixed fee), as in Lago.
    """
    remaining_events = props.free_units_per_events or None
    remaining_amount = props.free_units_per_total_aggregation or None
    free_active = remaining_events is not None or remaining_amount is not None
    free_value, free_events = ZERO, 0
    paying: list[Decimal] = []
    for value in values:
        if free_active and (remaining_amount is None or value < remaining_amount):
            free_value += value
            free_events += 1
            if remaining_amount is not None:
                remaining_amount -= value
            if remaining_events is not None:
                remaining_events -= 1
                free_active = remaining_events > 0
            continue
        if free_active and remaining_amount is not None:
            free_value += remaining_amount
            value -= remaining_amount
            free_active = False
        paying.append(value)
    return _FreeWalk(free_value, free_events, tuple(paying))


def _percentage(
    props: PercentageProperties,
    units: Decimal,
    events_count: int,
    event_values: Sequence[Decimal] | None,
) -> ChargeResult:
    """rate % of the paying units plus a fixed amount per paying event, clamped per event."""
    if event_values is None:
        if props.needs_event_values:
            raise ValueError(
                "percentage with free units or per-transaction min/max needs event_values"
            )
        walk = _FreeWalk(ZERO, 0, ())
    else:
        events_count = len(event_values)
        walk = _walk_free_units(props, event_values)
    paid_units = max(units - walk.free_value, ZERO)
    paid_events = events_count - walk.free_events
    percentage_amount = (paid_units * props.rate).scaleb(-2)
    fixed_amount = ZERO if units == 0 else paid_events * props.fixed_amount
    amount = percentage_amount + fixed_amount
    if props.has_min_max:
        amount = sum((_clamped_event_amount(props, v) for v in walk.paying_values), ZERO)
    detail = PercentageDetail(
        free_units=min(walk.free_value, units),
        paid_units=paid_units,
        free_events=walk.free_events,
        paid_events=paid_events,
        rate=props.rate,
        percentage_amount=percentage_amount,
        fixed_fee_amount=fixed_amount,
        min_max_adjustment_amount=amount - percentage_amount - fixed_amount,
    )
    return ChargeResult(ChargeModel.PERCENTAGE, units, amount, events_count, detail=detail)


def _clamped_event_amount(props: PercentageProperties, value: Decimal) -> Decimal:
    amount = (value * props.rate).scaleb(-2) + props.fixed_amount
    if props.per_transaction_min_amount is not None:
        amount = max(amount, props.per_transaction_min_amount)
    if props.per_transaction_max_amount is not None:
        amount = min(amount, props.per_transaction_max_amount)
    return amount
