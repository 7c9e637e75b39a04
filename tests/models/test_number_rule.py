"""The number rule (``tallyflow.models.number_rule``): the one bound on billing numbers, at its
edges, and its agreement between Python and the SQL pattern the fold reads strings with."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallyflow.models.number_rule import (
    BOUNDED_PLAIN,
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    dumps,
    in_range,
    json_ready,
    numbers_out_of_range,
    out_of_range_message,
)
from tallyflow.models.rating.money import WIDE, parse_plain_decimal

EDGE = 10**MAX_INTEGER_DIGITS

IN_RANGE = [
    ("zero", "0", True),
    ("one", "1", True),
    ("negative-zero", "-0", True),
    ("negative-zero-decimal", "-0.0", True),
    ("edge-minus-1", str(EDGE - 1), True),
    ("edge", str(EDGE), False),
    ("edge-plus-1", str(EDGE + 1), False),
    ("negative-edge-minus-1", str(-(EDGE - 1)), True),
    ("negative-edge", str(-EDGE), False),
    ("just-below-edge", str(EDGE - 1) + "." + "9" * MAX_FRACTION_DIGITS, True),
    ("26-decimals", "0." + "0" * 25 + "1", True),
    ("27-decimals", "0." + "0" * 26 + "1", False),
    ("27-decimals-trailing-zero", "1." + "0" * 27, False),  # as written: 27 digits
    ("exponent-in", "1E+24", True),
    ("exponent-edge", "1E+25", False),
    ("tiny-in", "1E-26", True),
    ("tiny-out", "1E-27", False),
    ("zero-huge-exponent", "0E+400", True),  # the value is 0
    ("zero-many-decimals", "0E-400", False),  # 400 digits after the point as written
    ("1e308", "1E+308", False),
    ("minus-1e308", "-1E+308", False),
    ("1e400", "1E+400", False),
    ("30-digit", "123456789012345678901234567890", False),
    ("max-lago-pg", "9" * 25 + "." + "9" * 15, True),  # numeric(40, 15)
    ("max-lago-clickhouse", "9" * 12 + "." + "9" * 26, True),  # Decimal(38, 26)
    ("nan", "NaN", False),
    ("infinity", "Infinity", False),
]


@pytest.mark.parametrize(("text", "accepted"), [c[1:] for c in IN_RANGE],
                         ids=[c[0] for c in IN_RANGE])
def test_in_range_at_the_edges(text: str, accepted: bool) -> None:
    assert in_range(Decimal(text)) is accepted


PLAIN = [
    ("zero", "0", True),
    ("leading-zeros-do-not-count", "0" * 40 + "1", True),
    ("25-digits", "9" * 25, True),
    ("26-digits", "1" + "0" * 25, False),
    ("30-digits", "123456789012345678901234567890", False),
    ("negative-25", "-" + "9" * 25, True),
    ("26-decimals", "1." + "5" * 26, True),
    ("27-decimals", "1." + "5" * 27, False),
    ("exponent", "1e5", False),
    ("spaces", " 100 ", False),
    ("plus", "+1", False),
    ("hex", "0x10", False),
    ("arabic-indic", "\u0661\u0662", False),
    ("fullwidth", "\uff11", False),
    ("trailing-dot", "1.", False),
    ("newline", "1\n", False),
]


@pytest.mark.parametrize(("text", "read"), [c[1:] for c in PLAIN], ids=[c[0] for c in PLAIN])
def test_strings_are_read_as_numbers_only_inside_the_bound(text: str, read: bool) -> None:
    assert (BOUNDED_PLAIN.fullmatch(text) is not None) is read
    assert (parse_plain_decimal(text) is not None) is read


@given(st.from_regex(r"-?[0-9]{1,40}(\.[0-9]{1,40})?", fullmatch=True))
def test_the_pattern_and_the_decimal_rule_agree(text: str) -> None:
    """The SQL fold reads strings by the pattern, the pure aggregation by ``in_range``: the same
    strings count, or the differential tests of the two would drift."""
    assert (BOUNDED_PLAIN.fullmatch(text) is not None) is in_range(Decimal(text))
    sql = re.compile(BOUNDED_PLAIN.pattern.join("^$"))
    assert (sql.search(text) is not None) is in_range(Decimal(text))


def test_json_numbers_are_found_anywhere_with_their_path() -> None:
    value: Any = {"a": 1, "b": [Decimal("1E+400"), {"c": 10**30}], "d": "1" * 60, "e": True}
    assert [path for path, _ in numbers_out_of_range(value, "properties")] == [
        "properties.b[0]", "properties.b[1].c"]


def test_the_message_names_field_value_and_bound() -> None:
    message = out_of_range_message("properties.tokens", Decimal(10**30))
    assert message.startswith("properties.tokens is 1000000000000000000000000000000")
    assert "|x| < 1e25" in message and "26 digits" in message
    long = out_of_range_message("x", Decimal("1." + "1" * 100))
    assert "..." in long and len(long) < 200


def test_a_sum_of_a_billion_values_at_the_bound_stays_exact() -> None:
    biggest = Decimal(str(EDGE - 1) + "." + "9" * MAX_FRACTION_DIGITS)
    total = WIDE.multiply(biggest, Decimal(10**9))
    # exact: WIDE keeps 200 digits, this needs 60 (the default context's 28 would round it)
    assert WIDE.divide(total, Decimal(10**9)) == biggest
    assert len(total.as_tuple().digits) == 60
    assert biggest * 10**9 != total


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 10**24, -(10**40)])
def test_integers_beyond_64_bits_are_written(big: int) -> None:
    document = {"amount_cents": big, "list": [big], "small": 2**63 - 1}
    with pytest.raises(TypeError):
        orjson.dumps(document)
    assert orjson.loads(dumps(document, big="string")) == {
        "amount_cents": str(big), "list": [str(big)], "small": 2**63 - 1}
    exact = dumps(document)
    assert str(big).encode() in exact and b'"' + str(big).encode() not in exact
    assert json_ready(5) == 5
