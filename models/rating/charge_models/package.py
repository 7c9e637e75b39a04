"""package: ceil((units - free units) / package size) packages at the package's price."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.charge_models.base import (
    ONE,
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PackageDetail,
    PropertyReader,
)


@dataclass(frozen=True)
class PackageProperties(ChargeProperties):
    amount: Decimal
    package_size: int
    free_units: int = 0


class Package(ChargeModelDefinition[PackageProperties]):
    name = "package"
    properties_type = PackageProperties

    def parse(self, data: Mapping[str, object], reader: PropertyReader) -> PackageProperties | None:
        amount = reader.price(data, "amount", "amount")
        size = reader.integer(data, "package_size", "package_size", minimum=1, required=True)
        free = reader.integer(data, "free_units", "free_units", minimum=0, required=False)
        if amount is None or size is None or reader.errors:
            return None
        return PackageProperties(amount, size, free or 0)

    def price(
        self,
        props: PackageProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        """A package is due from its first unit."""
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
        return ChargeResult(self.name, units, count * props.amount, events_count, detail=detail)

    def describe(self, properties: Mapping[str, object]) -> str:
        p = properties
        free = f", first {p['free_units']} free" if p.get("free_units") else ""
        return f"{p.get('amount')} per {p.get('package_size')} units{free}"


PACKAGE: Final = Package()
