"""Charge models: units -> money, as pure functions over immutable property models.

Amounts are unrounded ``Decimal`` in major units (dollars); rounding to cents happens once, in
:class:`Fee`, ROUND_HALF_UP at the currency exponent. Catalog payloads go through
:func:`validate_properties` (error messages carry the property path) and :func:`parse_properties`
before anything is priced, so the pricing functions never see a float or a malformed range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal, localcontext
from enum import StrEnum
from typing import Final

from models.rating.money import (
    amount_cents,
    from_minor,
    is_plain_decimal,
    precise_amount_cents,
    round_minor,
)

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


# ---------------------------------------------------------------------------------------------
# Property models
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Validation and parsing
# ---------------------------------------------------------------------------------------------

_DECIMAL_HINT: Final = 'a decimal string such as "0.12"'
_RANGE_KEYS: Final = {
    ChargeModel.GRADUATED: "graduated_ranges",
    ChargeModel.VOLUME: "volume_ranges",
    ChargeModel.GRADUATED_PERCENTAGE: "graduated_percentage_ranges",
}


class _Reader:
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


def validate_properties(
    charge_model: ChargeModel | str, properties: Mapping[str, object] | None
) -> list[str]:
    """Every problem in a charge's properties, each prefixed with its path; [] when valid."""
    try:
        model = ChargeModel(charge_model)
    except ValueError:
        return [f"charge_model: unknown charge model {charge_model!r}"]
    reader = _Reader()
    _parse(model, properties or {}, reader)
    return reader.errors


def parse_properties(
    charge_model: ChargeModel | str, properties: Mapping[str, object] | None
) -> ChargeProperties:
    """Typed, validated properties; raises :class:`PropertiesError` listing every problem."""
    errors = validate_properties(charge_model, properties)
    if errors:
        raise PropertiesError(errors)
    reader = _Reader()
    parsed = _parse(ChargeModel(charge_model), properties or {}, reader)
    assert parsed is not None  # validated above
    return parsed


def _parse(
    model: ChargeModel, data: Mapping[str, object], reader: _Reader
) -> ChargeProperties | None:
    if model is ChargeModel.DYNAMIC:
        return DynamicProperties()
    if model is ChargeModel.STANDARD:
        amount = reader.price(data, "amount", "amount")
        return None if amount is None else StandardProperties(amount)
    if model is ChargeModel.PACKAGE:
        return _parse_package(data, reader)
    if model is ChargeModel.PERCENTAGE:
        return _parse_percentage(data, reader)
    key = _RANGE_KEYS[model]
    ranges = _parse_ranges(data, key, reader, rated=model is ChargeModel.GRADUATED_PERCENTAGE)
    if ranges is None or reader.errors:
        return None
    if model is ChargeModel.GRADUATED:
        return GraduatedProperties(ranges)  # type: ignore[arg-type]
    if model is ChargeModel.VOLUME:
        return VolumeProperties(ranges)  # type: ignore[arg-type]
    return GraduatedPercentageProperties(ranges)  # type: ignore[arg-type]


def _parse_package(data: Mapping[str, object], reader: _Reader) -> PackageProperties | None:
    amount = reader.price(data, "amount", "amount")
    size = reader.integer(data, "package_size", "package_size", minimum=1, required=True)
    free = reader.integer(data, "free_units", "free_units", minimum=0, required=False)
    if amount is None or size is None or reader.errors:
        return None
    return PackageProperties(amount, size, free or 0)


def _parse_percentage(data: Mapping[str, object], reader: _Reader) -> PercentageProperties | None:
    rate = reader.price(data, "rate", "rate")
    fixed = reader.optional_price(data, "fixed_amount", "fixed_amount")
    free_events = reader.integer(
        data, "free_units_per_events", "free_units_per_events", minimum=0, required=False
    )
    free_total = reader.optional_price(
        data, "free_units_per_total_aggregation", "free_units_per_total_aggregation"
    )
    low = reader.optional_price(data, "per_transaction_min_amount", "per_transaction_min_amount")
    high = reader.optional_price(data, "per_transaction_max_amount", "per_transaction_max_amount")
    if low is not None and high is not None and low > high:
        reader.errors.append(
            "per_transaction_max_amount: must be greater than or equal to "
            "per_transaction_min_amount"
        )
    if rate is None or reader.errors:
        return None
    return PercentageProperties(rate, fixed or ZERO, free_events, free_total, low, high)


def _parse_ranges(
    data: Mapping[str, object], key: str, reader: _Reader, *, rated: bool
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
    item: Mapping[str, object], path: str, reader: _Reader, *, rated: bool
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


def _check_range_chain(ranges: Sequence[PriceRange | RateRange], key: str, reader: _Reader) -> None:
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


def properties_from(
    charge_model: ChargeModel | str, properties: ChargeProperties | Mapping[str, object]
) -> ChargeProperties:
    """Accept typed properties as they are, parse a raw payload (raising on errors)."""
    if isinstance(properties, Mapping):
        return parse_properties(charge_model, properties)
    return properties


def needs_event_values(
    charge_model: ChargeModel | str, properties: ChargeProperties | Mapping[str, object]
) -> bool:
    """True when pricing needs each event's value in time order, not only the units.

    Only percentage with free units or per-transaction min/max needs them; the DB layer reads
    those values for such charges (they cannot be folded into a price-independent state).
    """
    parsed = properties_from(charge_model, properties)
    return isinstance(parsed, PercentageProperties) and parsed.needs_event_values


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Pricing
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Pay in advance and minimum commitment
# ---------------------------------------------------------------------------------------------


def pay_in_advance_amounts(
    charge_model: ChargeModel | str,
    properties: ChargeProperties | Mapping[str, object],
    event_units: Sequence[Decimal],
    *,
    bill_only_increases: bool,
    prior_units: Sequence[Decimal] = (),
) -> list[Decimal]:
    """Per-event fee (major units, >= 0) for pay-in-advance charges, in time order.

    Each event pays ``price(after) - price(before)``. With ``bill_only_increases`` (sum and
    unique_count) the billed units are the running maximum, so a decrease followed by a
    re-increase is not billed twice. Before the first event nothing has been billed, so the
    first event pays the first tier's flat amount too and the fees add up to the in-arrears
    price. ``prior_units`` are the period's events already billed; only the fees of
    ``event_units`` are returned.
    """
    model = ChargeModel(charge_model)
    if model is ChargeModel.DYNAMIC:
        raise ValueError("dynamic in advance: each event pays its precise_total_amount_cents")
    props = properties_from(model, properties)
    every = [*prior_units, *event_units]
    cumulative = billed = previous_price = ZERO
    fees: list[Decimal] = []
    with localcontext(_PRICING):
        for index, delta in enumerate(every):
            cumulative += delta
            billed = max(billed, cumulative) if bill_only_increases else cumulative
            price = compute_charge(
                model, props, billed, events_count=index + 1, event_values=every[: index + 1]
            ).amount
            fees.append(max(price - previous_price, ZERO))
            previous_price = price
    return fees[len(prior_units) :]


def min_amount_true_up(
    charge_amount_cents: int,
    min_amount_cents: Decimal | int,
    currency: str,
    prorata: Decimal = ONE,
) -> Fee:
    """The fee that brings a charge up to its (prorated) minimum at period end.

    ``charge_amount_cents`` is the sum of the charge's rounded fees for the period;
    ``prorata`` the share of the period the subscription covered (see periods.prorata_days).
    """
    with localcontext(_PRICING):
        minimum = Decimal(min_amount_cents) * prorata
        precise = max(minimum - charge_amount_cents, ZERO)
        cents = max(round_minor(minimum) - charge_amount_cents, ZERO)
    return Fee(
        currency=currency,
        units=ONE if cents > 0 else ZERO,
        amount=from_minor(precise, currency),
        amount_cents=int(cents),
        precise_amount_cents=precise,
    )
