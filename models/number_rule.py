"""The numbers Tallyflow accepts in billing fields: one bound, stated once (docs/architecture.md
§7, the number rule).

A number in an event's properties or in ``precise_total_amount_cents`` is accepted when, in
positional notation, it has at most ``MAX_INTEGER_DIGITS`` significant digits before the decimal
point (its magnitude is below 10^25) and at most ``MAX_FRACTION_DIGITS`` digits after it, as
written. That is the union of what Lago's own event stores hold -- PostgreSQL
``numeric(40, 15)`` (25 digits before the point) for ``precise_total_amount_cents`` and the
enriched value, ClickHouse ``Decimal(38, 26)`` (26 after) for the aggregated value -- so nothing
Lago keeps is refused here, while a sum of a billion such values still has under 80 significant
digits: far inside ``money.WIDE`` (200 digits) and PostgreSQL's ``numeric``.

Every JSON number (anywhere in ``properties``) is checked at ingest, without the catalog. A
string is data (it may be an id) and is never refused for its digits; the aggregations read a
string as a number only when it is a plain decimal within the same bound
(``money.parse_plain_decimal``, and ``BOUNDED_PLAIN_SQL`` in the SQL fold),
so no value an aggregation reads can lie outside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Final

import orjson

MAX_INTEGER_DIGITS: Final = 25
MAX_FRACTION_DIGITS: Final = 26
BOUND_TEXT: Final = (
    f"the bound is |x| < 1e{MAX_INTEGER_DIGITS} with at most {MAX_FRACTION_DIGITS} digits "
    "after the decimal point"
)
# How much of an offending value a message quotes.
QUOTED: Final = 40

# A plain decimal (Lago's ``^-?\d+(\.\d+)?$``, ASCII digits) inside the bound; leading zeros do
# not count, as they do not change the value. Always used with fullmatch.
BOUNDED_PLAIN: Final = re.compile(
    rf"-?0*[0-9]{{1,{MAX_INTEGER_DIGITS}}}(\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?"
)
# The same pattern for PostgreSQL's ``~`` (anchored there, as ``~`` searches).
BOUNDED_PLAIN_SQL: Final = f"^{BOUNDED_PLAIN.pattern}$"


def in_range(number: Decimal) -> bool:
    """Whether a finite decimal lies inside the bound (its digits as written after the point)."""
    sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int):  # NaN, sNaN, Infinity
        return False
    if exponent < -MAX_FRACTION_DIGITS:
        return False
    if not any(digits):
        return True  # zero, however written before the point (0E+400 is 0)
    return number.adjusted() < MAX_INTEGER_DIGITS


def quoted(value: object) -> str:
    """The first characters of a value as a message quotes it."""
    if isinstance(value, Decimal) and value.is_finite() and -40 < value.adjusted() < 40:
        text = format(value, "f")
    else:
        text = str(value)
    return text if len(text) <= QUOTED else text[:QUOTED] + "..."


def out_of_range_message(where: str, value: object) -> str:
    return f"{where} is {quoted(value)}, outside the numbers Tallyflow accepts: {BOUND_TEXT}"


def number_of(value: object) -> Decimal | None:
    """A JSON number (int, Decimal, float) as a decimal; ``None`` for anything else (a string,
    a boolean, null, a container). Infinite values come back infinite, NaN as NaN."""
    kind = type(value)
    if kind is int:
        return Decimal(value)  # type: ignore[arg-type]
    if kind is Decimal:
        return value  # type: ignore[return-value]
    if kind is float:
        if math.isnan(value):  # type: ignore[arg-type]
            return Decimal("NaN")
        if math.isinf(value):  # type: ignore[arg-type]
            return Decimal("Infinity") if value > 0 else Decimal("-Infinity")  # type: ignore[operator]
        return Decimal(repr(value))  # the shortest round-trip text (money.float_to_decimal)
    return None


def numbers_out_of_range(value: Any, path: str) -> Iterator[tuple[str, Decimal]]:
    """Every JSON number in ``value`` (nested in objects and arrays) outside the bound, with
    its path (``properties.usage.tokens``, ``properties.list[2]``). NaN counts as outside: it is
    no number at all."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            yield from numbers_out_of_range(item, f"{path}.{key}")
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            yield from numbers_out_of_range(item, f"{path}[{index}]")
    else:
        number = number_of(value)
        if number is not None and not in_range(number):
            yield path, number


def json_ready(value: Any, big: str = "number") -> Any:
    """``value`` with every integer beyond 64 bits made writable by orjson (which refuses
    them): as an exact JSON number (``big="number"``, for what Tallyflow reads back itself)
    or as a string (``big="string"``, for answers to clients, whose JSON readers would lose
    the digits: a double keeps 15-17 of them)."""
    kind = type(value)
    if kind is int:
        if -(2**63) <= value < 2**64:
            return value
        return str(value) if big == "string" else orjson.Fragment(str(value))
    if kind is dict:
        return {key: json_ready(item, big) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [json_ready(item, big) for item in value]
    return value


def dumps(value: Any, default: Callable[[Any], Any] | None = None, big: str = "number") -> bytes:
    """``orjson.dumps`` that also writes integers beyond 64 bits (see ``json_ready``); the
    usual document, with none, is written in one pass."""
    try:
        return orjson.dumps(value, default=default)
    except orjson.JSONEncodeError:
        return orjson.dumps(json_ready(value, big), default=default)
