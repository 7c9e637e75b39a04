"""The charge models and their property types: immutable, parsed once from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from enum import StrEnum
from typing import Final

ZERO: Final = Decimal(0)


ONE: Final = Decimal(1)


# Products of large unit counts and long prices must stay exact before the single rounding.
_PRICING: Final = Context(prec=60)


class ChargeModel(StrEnum):
    STANDARD = "standard"
    PACKAGE = "package"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class StandardProperties:
    amount: Decimal


@dataclass(frozen=True)
class PackageProperties:
    amount: Decimal
    package_size: int
    free_units: int = 0


@dataclass(frozen=True)
class PriceRange:
    """A graduated or volume tier; ``to_value`` is ``None`` only on the open last tier."""

    from_value: Decimal
    to_value: Decimal | None
    per_unit_amount: Decimal
    flat_amount: Decimal


@dataclass(frozen=True)
class RateRange:
    """A graduated_percentage tier: ``rate`` percent of the units in the tier plus a flat fee."""

    from_value: Decimal
    to_value: Decimal | None
    rate: Decimal
    flat_amount: Decimal


@dataclass(frozen=True)
class GraduatedProperties:
    ranges: tuple[PriceRange, ...]


@dataclass(frozen=True)
class VolumeProperties:
    ranges: tuple[PriceRange, ...]


@dataclass(frozen=True)
class GraduatedPercentageProperties:
    ranges: tuple[RateRange, ...]


@dataclass(frozen=True)
class PercentageProperties:
    rate: Decimal
    fixed_amount: Decimal = ZERO
    free_units_per_events: int | None = None
    free_units_per_total_aggregation: Decimal | None = None
    per_transaction_min_amount: Decimal | None = None
    per_transaction_max_amount: Decimal | None = None

    @property
    def has_min_max(self) -> bool:
        return (
            self.per_transaction_min_amount is not None
            or self.per_transaction_max_amount is not None
        )

    @property
    def needs_event_values(self) -> bool:
        """Free units and per-transaction clamps depend on each event, in time order."""
        return (
            bool(self.free_units_per_events)
            or bool(self.free_units_per_total_aggregation)
            or self.has_min_max
        )


@dataclass(frozen=True)
class DynamicProperties:
    """dynamic has no price of its own: events carry ``precise_total_amount_cents``."""


ChargeProperties = (
    StandardProperties
    | PackageProperties
    | GraduatedProperties
    | VolumeProperties
    | PercentageProperties
    | GraduatedPercentageProperties
    | DynamicProperties
)


class PropertiesError(ValueError):
    """Raised by :func:`parse_properties`; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
