"""graduated_percentage: each tier charges its rate percent of the units in it, plus the flat
amount of every tier reached (the graduated walk of ``graduated.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.charge_models.base import (
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PropertyReader,
    RateRange,
    describe_ranges,
    parse_ranges,
)
from tallyflow.models.rating.charge_models.graduated import graduated_details, sum_ranges


@dataclass(frozen=True)
class GraduatedPercentageProperties(ChargeProperties):
    ranges: tuple[RateRange, ...]


class GraduatedPercentage(ChargeModelDefinition[GraduatedPercentageProperties]):
    name = "graduated_percentage"
    properties_type = GraduatedPercentageProperties

    def parse(
        self, data: Mapping[str, object], reader: PropertyReader
    ) -> GraduatedPercentageProperties | None:
        ranges = parse_ranges(data, "graduated_percentage_ranges", reader, rated=True)
        if ranges is None or reader.errors:
            return None
        return GraduatedPercentageProperties(ranges)  # type: ignore[arg-type]

    def price(
        self,
        props: GraduatedPercentageProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        ranges = graduated_details(props.ranges, units)
        return ChargeResult(self.name, units, sum_ranges(ranges), events_count, ranges)

    def describe(self, properties: Mapping[str, object]) -> str:
        ranges = properties.get("graduated_percentage_ranges", [])
        return describe_ranges(self.name, ranges, "rate")


GRADUATED_PERCENTAGE: Final = GraduatedPercentage()
