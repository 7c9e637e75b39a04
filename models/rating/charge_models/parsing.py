"""Catalog properties -> property models, with errors that carry the property path.

Prices are decimal strings (``JsonNumber`` for the bounds that may be numbers); ranges must
chain without gaps. The pricing functions never see a float or a malformed range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.charge_models.properties import (
    ZERO,
    ChargeModel,
    ChargeProperties,
    DynamicProperties,
    GraduatedPercentageProperties,
    GraduatedProperties,
    PackageProperties,
    PercentageProperties,
    PriceRange,
    PropertiesError,
    RateRange,
    StandardProperties,
    VolumeProperties,
)
from tallyflow.models.rating.money import (
    is_plain_decimal,
)

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
