"""graduated: each tier prices the units that fall in it, plus the flat amount of every tier
reached; prorated, Lago's ``ProratedGraduatedService``.

Prorated: Lago prices a prorated charge's prorated units but lets the full units decide the
tier. Prorated graduated walks the entries in time order, letting the cumulative full units
decide which range each entry's units fall in and pricing the entry's prorated share there (an
entry crossing a boundary is split at its own prorated/full ratio), with the flat amount of
every range up to the highest cumulative full units. Entries are per local day here (see
``prorate_sum``: events of one day weigh the same), which gives Lago's result unless one day
both adds and removes units (Lago then walks its events one by one: the ranges and flat
amounts can follow the day's peak, which a day's total does not show).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from tallyflow.models.rating.charge_models.base import (
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PriceRange,
    PropertyReader,
    RangeDetail,
    RateRange,
    describe_ranges,
    parse_ranges,
)

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import ProratedUnits


@dataclass(frozen=True)
class GraduatedProperties(ChargeProperties):
    ranges: tuple[PriceRange, ...]


class Graduated(ChargeModelDefinition[GraduatedProperties]):
    name = "graduated"
    properties_type = GraduatedProperties
    prorated = True

    def parse(
        self, data: Mapping[str, object], reader: PropertyReader
    ) -> GraduatedProperties | None:
        ranges = parse_ranges(data, "graduated_ranges", reader, rated=False)
        if ranges is None or reader.errors:
            return None
        return GraduatedProperties(ranges)  # type: ignore[arg-type]

    def price(
        self,
        props: GraduatedProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        ranges = graduated_details(props.ranges, units)
        return ChargeResult(self.name, units, sum_ranges(ranges), events_count, ranges)

    def price_prorated(
        self, props: GraduatedProperties, units: ProratedUnits, events_count: int
    ) -> ChargeResult:
        amount = prorated_graduated(props.ranges, units)
        return ChargeResult(self.name, max(units.full, ZERO), amount, events_count)

    def describe(self, properties: Mapping[str, object]) -> str:
        ranges = properties.get("graduated_ranges", [])
        return describe_ranges(self.name, ranges, "per_unit_amount")


GRADUATED: Final = Graduated()


def graduated_details(
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


def sum_ranges(details: Sequence[RangeDetail]) -> Decimal:
    return sum((d.total_with_flat_amount for d in details), ZERO)


def _coefficient(entries: Sequence[tuple[Decimal, Decimal]], index: int) -> Decimal:
    full, prorated = entries[index]
    return ZERO if full == 0 else prorated / full


def prorated_graduated(ranges: Sequence[PriceRange], units: ProratedUnits) -> Decimal:
    """Lago's ``ProratedGraduatedService#compute_amount``, step for step.

    The cumulative full units decide the range (a removal can move back down a range); each
    entry's prorated units are priced in the range they fall in, an entry straddling a
    boundary split at its own prorated/full ratio. Flat amounts: every range up to the one
    holding the highest cumulative full units. Nothing is due at 0 prorated units or when the
    full units end below zero.
    """
    entries = units.entries
    if units.prorated == 0 or not entries:
        return ZERO
    count = len(entries)
    index = 0
    overflow = full_sum = max_full_sum = tier_prorated = amount = ZERO
    tier = ranges[0]
    # each pass adds an entry or climbs a range: a bound that no catalog range set can reach
    budget = (count + 1) * (len(ranges) + 1)
    while (index < count or overflow != 0) and budget > 0:
        budget -= 1
        following = entries[index][0] if index < count else None
        tier = _range_of(ranges, full_sum, overflow, following)
        if overflow != 0:
            ratio = _coefficient(entries, index - 1)
            tier_prorated += overflow * ratio
            if tier.to_value is not None and full_sum >= tier.to_value:
                overflow = full_sum - tier.to_value
                tier_prorated -= overflow * ratio
                amount += tier_prorated * tier.per_unit_amount
                tier_prorated = ZERO
                continue
            overflow = ZERO
        if index >= count:
            break
        full_sum += entries[index][0]
        max_full_sum = max(max_full_sum, full_sum)
        tier_prorated += entries[index][1]
        index += 1
        if _stays(full_sum, tier):
            continue
        overflow = _overflow(full_sum, tier)
        tier_prorated -= overflow * _coefficient(entries, index - 1)
        amount += tier_prorated * tier.per_unit_amount
        tier_prorated = ZERO
    amount += tier_prorated * tier.per_unit_amount
    if full_sum < 0:
        return ZERO
    flat = ZERO
    for candidate in ranges:
        flat += candidate.flat_amount
        if candidate.to_value is None or max_full_sum <= candidate.to_value:
            break
    return max(amount, ZERO) + flat


def _range_of(
    ranges: Sequence[PriceRange], full_sum: Decimal, overflow: Decimal, following: Decimal | None
) -> PriceRange:
    """Lago's ``range``: the range the walk is in (the next one when exactly at a boundary and
    the next entry adds units)."""
    if full_sum <= 0:
        return ranges[0]
    if overflow == 0:
        units = full_sum
    else:
        units = full_sum - overflow + 1 if overflow > 0 else full_sum + overflow
    for position, tier in enumerate(ranges):
        if units == tier.to_value:
            rising = following is not None and following > 0
            return ranges[position + 1] if rising and position + 1 < len(ranges) else tier
        if units >= tier.from_value and (tier.to_value is None or units < tier.to_value):
            return tier
    return ranges[0]


def _stays(full_sum: Decimal, tier: PriceRange) -> bool:
    """Lago's ``skip_overflow_calculation?``: the cumulative units are still in ``tier``."""
    if tier.to_value is None:
        return full_sum >= tier.from_value - 1
    return tier.from_value <= full_sum < tier.to_value


def _overflow(full_sum: Decimal, tier: PriceRange) -> Decimal:
    """Lago's ``calculate_overflow``: units past the top of ``tier`` (negative below it)."""
    if tier.to_value is not None and full_sum >= tier.to_value:
        return full_sum - tier.to_value
    return full_sum - tier.from_value + 1
