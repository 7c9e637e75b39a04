"""volume: every unit at the price of the one tier holding them all, plus its flat amount;
prorated, the full units pick the tier and the prorated units are priced at it (Lago's
``VolumeService``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Final

from tallyflow.models.rating.charge_models.base import (
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PriceRange,
    PropertyReader,
    RangeDetail,
    describe_ranges,
    parse_ranges,
)

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import ProratedUnits


@dataclass(frozen=True)
class VolumeProperties(ChargeProperties):
    ranges: tuple[PriceRange, ...]


class Volume(ChargeModelDefinition[VolumeProperties]):
    name = "volume"
    properties_type = VolumeProperties
    prorated = True
    refused_in_advance = True

    def parse(self, data: Mapping[str, object], reader: PropertyReader) -> VolumeProperties | None:
        ranges = parse_ranges(data, "volume_ranges", reader, rated=False)
        if ranges is None or reader.errors:
            return None
        return VolumeProperties(ranges)  # type: ignore[arg-type]

    def price(
        self,
        props: VolumeProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        """All units at one tier's price, plus its flat amount (due at 0 units too)."""
        tier = volume_range(props.ranges, units)
        total = units * tier.per_unit_amount
        detail = RangeDetail(
            from_value=tier.from_value,
            to_value=tier.to_value,
            units=units,
            per_unit_amount=tier.per_unit_amount,
            flat_unit_amount=tier.flat_amount,
            per_unit_total_amount=total,
            total_with_flat_amount=total + tier.flat_amount,
        )
        return ChargeResult(
            self.name, units, detail.total_with_flat_amount, events_count, (detail,)
        )

    def price_prorated(
        self, props: VolumeProperties, units: ProratedUnits, events_count: int
    ) -> ChargeResult:
        full = max(units.full, ZERO)
        tier = volume_range(props.ranges, full)
        amount = max(units.prorated, ZERO) * tier.per_unit_amount + tier.flat_amount
        return ChargeResult(self.name, full, amount, events_count)

    def describe(self, properties: Mapping[str, object]) -> str:
        ranges = properties.get("volume_ranges", [])
        return describe_ranges(self.name, ranges, "per_unit_amount")


VOLUME: Final = Volume()


def volume_range(ranges: Sequence[PriceRange], units: Decimal) -> PriceRange:
    """The one tier pricing all units: ``from <= ceil(units)`` and ``units <= to`` (Lago)."""
    ceiling = units.to_integral_value(rounding=ROUND_CEILING)
    for tier in ranges:
        if tier.from_value <= ceiling and (tier.to_value is None or units <= tier.to_value):
            return tier
    return ranges[-1]
