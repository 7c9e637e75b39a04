"""standard: every unit at one price; prorated, the prorated units at that price."""

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
    PropertyReader,
)

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import ProratedUnits


@dataclass(frozen=True)
class StandardProperties(ChargeProperties):
    amount: Decimal


class Standard(ChargeModelDefinition[StandardProperties]):
    name = "standard"
    properties_type = StandardProperties
    prorated = True

    def parse(
        self, data: Mapping[str, object], reader: PropertyReader
    ) -> StandardProperties | None:
        amount = reader.price(data, "amount", "amount")
        return None if amount is None else StandardProperties(amount)

    def price(
        self,
        props: StandardProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        return ChargeResult(self.name, units, units * props.amount, events_count)

    def price_prorated(
        self, props: StandardProperties, units: ProratedUnits, events_count: int
    ) -> ChargeResult:
        amount = max(units.prorated, ZERO) * props.amount
        return ChargeResult(self.name, max(units.full, ZERO), amount, events_count)

    def describe(self, properties: Mapping[str, object]) -> str:
        return f"{properties.get('amount')} per unit"


STANDARD: Final = Standard()
