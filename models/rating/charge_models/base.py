"""What every charge model shares: the pricing context, tiers, results, the property reader,
and the interface a charge model implements (:class:`ChargeModelDefinition`).

A charge model is one module of this package holding its properties type, their parsing, its
pricing and, where it has any, its prorated and pay-in-advance behaviour; ``registry.py`` maps
Lago's ``charge_model`` string to it (docs/architecture.md §9). ``Fee`` is where rounding to the
currency's minor unit happens, once, ROUND_HALF_UP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from tallyflow.models.rating.money import (
    amount_cents,
    is_plain_decimal,
    precise_amount_cents,
)

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import ProratedUnits

ZERO: Final = Decimal(0)


ONE: Final = Decimal(1)


# Products of large unit counts and long prices must stay exact before the single rounding.
_PRICING: Final = Context(prec=60)

_DECIMAL_HINT: Final = 'a decimal string such as "0.12"'


class ChargeProperties:
    """What every model's (frozen dataclass) properties type derives from: parsed once from
    the catalog, handed back to the same model to price."""

    __slots__ = ()


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


class PropertiesError(ValueError):
    """Raised by :func:`parse_properties`; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


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

    charge_model: str
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


class PropertyReader:
    """Reads typed values out of a properties payload, collecting errors with their paths."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def price(self, data: Mapping[str, object], key: str, path: str) -> Decimal | None:
        """A non-negative decimal string (a JSON number is refused: it may be a float)."""
        raw = data.get(key)
        if raw is None:
            self.errors.append(f"{path}: is required ({_DECIMAL_HINT})")
            return None
        value = _decimal_text(raw)
        if value is None:
            self.errors.append(f"{path}: must be {_DECIMAL_HINT}, got {_describe_raw(raw)}")
            return None
        if value < 0:
            self.errors.append(f"{path}: must not be negative")
            return None
        return value

    def optional_price(self, data: Mapping[str, object], key: str, path: str) -> Decimal | None:
        return None if data.get(key) is None else self.price(data, key, path)

    def integer(
        self, data: Mapping[str, object], key: str, path: str, *, minimum: int, required: bool
    ) -> int | None:
        raw = data.get(key)
        if raw is None:
            if required:
                self.errors.append(f"{path}: is required (an integer)")
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.errors.append(f"{path}: must be an integer, got {raw!r}")
            return None
        if raw < minimum:
            self.errors.append(f"{path}: must be at least {minimum}")
            return None
        return raw

    def bound(self, data: Mapping[str, object], key: str, path: str) -> Decimal | None:
        """A range bound: a quantity, not a price, so a JSON number is accepted as Lago does
        (``"to_value": 0.1``; decimal tiers), read from its literal text; a decimal string too.
        A binary float is refused: its digits are already gone."""
        raw = data.get(key)
        if isinstance(raw, int) and not isinstance(raw, bool):
            value: Decimal | None = Decimal(raw)
        elif isinstance(raw, JsonNumber):
            value = raw.value
        else:
            value = _decimal_text(raw)
        if value is None:
            self.errors.append(
                f"{path}: must be a number or {_DECIMAL_HINT}, got {_describe_raw(raw)}"
            )
            return None
        if value < 0:
            self.errors.append(f"{path}: must not be negative")
            return None
        return value


class JsonNumber:
    """A number as written in a catalog file (a JSON or YAML number, read from its text).

    Catalog files are parsed without binary floats, but a *price* in a Lago payload must be a
    decimal string: a JSON number has no agreed precision between clients, and Lago refuses it.
    Quantities (range bounds) may be numbers. The catalog hands file numbers to
    :func:`validate_properties` wrapped in this marker so each field can decide; Python callers
    pass ``Decimal`` for prices directly.
    """

    __slots__ = ("value",)

    def __init__(self, value: Decimal) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"a JSON number ({format(self.value, 'f')})"


def _describe_raw(raw: object) -> str:
    if isinstance(raw, JsonNumber):
        return repr(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return f"a JSON number ({raw!r})"
    return repr(raw)


def _decimal_text(raw: object) -> Decimal | None:
    if isinstance(raw, Decimal) and raw.is_finite():
        return raw
    if isinstance(raw, str) and is_plain_decimal(raw):
        return Decimal(raw)
    return None


def parse_ranges(
    data: Mapping[str, object], key: str, reader: PropertyReader, *, rated: bool
) -> tuple[PriceRange | RateRange, ...] | None:
    raw = data.get(key)
    if not isinstance(raw, list | tuple) or not raw:
        reader.errors.append(f"{key}: must be a non-empty list of ranges")
        return None
    ranges: list[PriceRange | RateRange] = []
    for index, item in enumerate(raw):
        path = f"{key}[{index}]"
        if not isinstance(item, Mapping):
            reader.errors.append(f"{path}: must be an object")
            continue
        parsed = _parse_range(item, path, reader, rated=rated)
        if parsed is not None:
            ranges.append(parsed)
    if len(ranges) != len(raw):
        return None
    _check_range_chain(ranges, key, reader)
    return tuple(ranges)


def _parse_range(
    item: Mapping[str, object], path: str, reader: PropertyReader, *, rated: bool
) -> PriceRange | RateRange | None:
    before = len(reader.errors)
    low = reader.bound(item, "from_value", f"{path}.from_value")
    high = None
    if item.get("to_value") is not None:
        high = reader.bound(item, "to_value", f"{path}.to_value")
    flat = reader.price(item, "flat_amount", f"{path}.flat_amount")
    if rated:
        rate = reader.price(item, "rate", f"{path}.rate")
        if len(reader.errors) > before:
            return None
        return RateRange(low, high, rate, flat)  # type: ignore[arg-type]
    per_unit = reader.price(item, "per_unit_amount", f"{path}.per_unit_amount")
    if len(reader.errors) > before:
        return None
    return PriceRange(low, high, per_unit, flat)  # type: ignore[arg-type]


def _check_range_chain(
    ranges: Sequence[PriceRange | RateRange], key: str, reader: PropertyReader
) -> None:
    """First starts at 0; each next starts at the previous end (decimal tiers) or end + 1."""
    last = len(ranges) - 1
    for index, current in enumerate(ranges):
        path = f"{key}[{index}]"
        if index == 0 and current.from_value != 0:
            reader.errors.append(f"{path}.from_value: the first range must start at 0")
        previous_to = ranges[index - 1].to_value if index else None
        plus_one = previous_to is not None and current.from_value == previous_to + 1
        if previous_to is not None and current.from_value != previous_to and not plus_one:
            reader.errors.append(
                f"{path}.from_value: must equal the previous to_value ({previous_to}) "
                f"or {previous_to + 1}"
            )
        if current.to_value is None:
            if index != last:
                reader.errors.append(f"{path}.to_value: only the last range may be open (null)")
        elif index == last:
            reader.errors.append(f"{path}.to_value: the last range must be open (null)")
        elif current.to_value < current.from_value or (
            current.to_value == current.from_value and not plus_one
        ):
            reader.errors.append(f"{path}.to_value: must be greater than from_value")


P = TypeVar("P", bound=ChargeProperties)


class ChargeModelDefinition(ABC, Generic[P]):
    """One charge model: Lago's ``charge_model`` string, its properties and its pricing.

    The class attributes are what the catalog and the rating code ask instead of testing the
    model's name: adding a model is its module and one line in ``registry.py``.
    """

    name: ClassVar[str]
    """Lago's ``charge_model`` value."""
    properties_type: ClassVar[type]
    prorated: ClassVar[bool] = False
    """Lago prorates it in arrears (``Charge#validate_prorated``): :meth:`price_prorated`."""
    needs_properties: ClassVar[bool] = True
    """False when the events carry the price (dynamic): a bucket without properties still
    prices; otherwise it prices at 0 (Lago)."""
    aggregation_types: ClassVar[frozenset[str] | None] = None
    """The metrics' ``aggregation_type`` values it accepts (``None``: any)."""
    refused_in_advance: ClassVar[bool] = False
    """Lago refuses ``pay_in_advance`` with it (``Charge#validate_pay_in_advance``)."""
    in_advance_not_billed: ClassVar[str | None] = None
    """Why Tallyflow does not bill it in advance yet (``None``: it does)."""

    @abstractmethod
    def parse(self, data: Mapping[str, object], reader: PropertyReader) -> P | None:
        """Typed properties, or ``None`` with the problems added to ``reader.errors``."""

    @abstractmethod
    def price(
        self,
        props: P,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        """Price ``units`` (>= 0) in the 60-digit pricing context; the amount is unrounded."""

    def describe(self, properties: Mapping[str, Any]) -> str:
        """The price in one line, in the words a pricing page would use (``tallyflow catalog
        show``), from the properties as the catalog holds them. Without its own words, a model
        shows its name."""
        return self.name

    def check_in_advance(self) -> None:
        """Raise ``ValueError`` when the model cannot price events one by one in advance."""

    def needs_event_values(self, props: P) -> bool:
        """True when pricing needs each event's value in time order, not only the units."""
        return False

    def price_prorated(self, props: P, units: ProratedUnits, events_count: int) -> ChargeResult:
        """Price prorated units; only models with ``prorated`` override this."""
        raise ValueError(f"{type(props).__name__} charges cannot be prorated")


def describe_ranges(model: str, ranges: Any, unit: str) -> str:
    """A tiered model's ranges in one line (``graduated 0-100: 0.01/unit + 0; 101-∞: ...``):
    ``unit`` is the range's price field (``per_unit_amount``, or ``rate`` in percent)."""
    mark = "%" if unit == "rate" else "/unit"
    tiers = []
    for r in ranges if isinstance(ranges, list) else []:
        to_value = "" if r.get("to_value") is None else str(r.get("to_value"))
        tiers.append(f"{r.get('from_value')}-{to_value or '∞'}: {r.get(unit)}{mark}"
                     f" + {r.get('flat_amount')}")
    return f"{model} " + "; ".join(tiers)
