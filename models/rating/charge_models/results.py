"""What pricing returns: the amount, per-range and per-package details, and the ``Fee``.

``Fee`` is where rounding to the currency's minor unit happens, once, ROUND_HALF_UP.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tallyflow.models.rating.charge_models.properties import ZERO, ChargeModel
from tallyflow.models.rating.money import (
    amount_cents,
    precise_amount_cents,
)


@dataclass(frozen=True)
class RangeDetail:
    """What one tier contributed (Lago's ``amount_details`` for graduated/volume)."""

    from_value: Decimal
    to_value: Decimal | None
    units: Decimal
    per_unit_amount: Decimal
    flat_unit_amount: Decimal
    per_unit_total_amount: Decimal
    total_with_flat_amount: Decimal


@dataclass(frozen=True)
class PackageDetail:
    free_units: Decimal
    paid_units: Decimal
    package_size: int
    package_count: Decimal
    per_package_unit_amount: Decimal


@dataclass(frozen=True)
class PercentageDetail:
    free_units: Decimal
    paid_units: Decimal
    free_events: int
    paid_events: int
    rate: Decimal
    percentage_amount: Decimal
    fixed_fee_amount: Decimal
    min_max_adjustment_amount: Decimal


@dataclass(frozen=True)
class ChargeResult:
    """Units priced by a charge model; ``amount`` is unrounded, in major units."""

    charge_model: ChargeModel
    units: Decimal
    amount: Decimal
    events_count: int = 0
    ranges: tuple[RangeDetail, ...] = ()
    detail: PackageDetail | PercentageDetail | None = None

    @property
    def precise_amount(self) -> Decimal:
        return self.amount

    @property
    def unit_amount(self) -> Decimal:
        return ZERO if self.units == 0 else self.amount / self.units

    def to_fee(self, currency: str) -> Fee:
        return Fee.from_amount(self.amount, currency, self.units, self.events_count)


@dataclass(frozen=True)
class Fee:
    """Money as invoiced: rounded minor units next to the unrounded (precise) ones."""

    currency: str
    units: Decimal
    amount: Decimal
    amount_cents: int
    precise_amount_cents: Decimal
    events_count: int = 0

    @classmethod
    def from_amount(
        cls, amount: Decimal, currency: str, units: Decimal = ZERO, events_count: int = 0
    ) -> Fee:
        """Negative units or amounts become 0 (a fee never pays the customer back)."""
        amount = max(amount, ZERO)
        return cls(
            currency=currency,
            units=max(units, ZERO),
            amount=amount,
            amount_cents=amount_cents(amount, currency),
            precise_amount_cents=precise_amount_cents(amount, currency),
            events_count=events_count,
        )
