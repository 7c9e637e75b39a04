"""dynamic: no price of its own, the events carry ``precise_total_amount_cents``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.charge_models.base import (
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PropertyReader,
)
from tallyflow.models.rating.money import from_minor


@dataclass(frozen=True)
class DynamicProperties(ChargeProperties):
    """dynamic has no price of its own: events carry ``precise_total_amount_cents``."""


class Dynamic(ChargeModelDefinition[DynamicProperties]):
    name = "dynamic"
    properties_type = DynamicProperties
    needs_properties = False
    aggregation_types = frozenset({"sum_agg"})
    in_advance_not_billed = "each event paying its own amount"

    def check_in_advance(self) -> None:
        raise ValueError("dynamic in advance: each event pays its precise_total_amount_cents")

    def parse(self, data: Mapping[str, object], reader: PropertyReader) -> DynamicProperties:
        return DynamicProperties()

    def price(
        self,
        props: DynamicProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        """The events' own amounts: precise minor units / the currency's subunit (JPY has no
        cents: 1234.5 "cents" are 1234.5 yen); 0 at 0 units (Lago's dynamic service returns 0
        when there are no units)."""
        if currency is None:
            raise ValueError("dynamic pricing needs the currency of precise_total_amount_cents")
        amount = ZERO if units == 0 else from_minor(precise_total_amount_cents, currency)
        return ChargeResult(self.name, units, amount, events_count)

    def describe(self, properties: Mapping[str, object]) -> str:
        return "the events' own amounts"


DYNAMIC: Final = Dynamic()
