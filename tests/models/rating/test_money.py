from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.rating.money import (
    amount_cents,
    currency_exponent,
    is_plain_decimal,
    parse_plain_decimal,
    precise_amount_cents,
    round_cents,
    to_decimal,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", True),
        ("12", True),
        ("-3", True),
        ("0.12", True),
        ("-0.5", True),
        ("1.", False),
        (".5", False),
        ("+1", False),
        ("1e3", False),
        ("NaN", False),
        ("Infinity", False),
        (" 1", False),
        ("1 000", False),
        ("", False),
    ],
)
def test_is_plain_decimal(text: str, expected: bool) -> None:
    assert is_plain_decimal(text) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("1.50"), Decimal("1.50")), (3, Decimal(3)), ("0.12", Decimal("0.12"))],
)
def test_to_decimal_accepts(value: object, expected: Decimal) -> None:
    assert to_decimal(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0.1, TypeError),
        (True, TypeError),
        (None, TypeError),
        ("1e3", ValueError),
        ("abc", ValueError),
        (Decimal("NaN"), ValueError),
    ],
)
def test_to_decimal_rejects(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_decimal(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", Decimal(12)),
        (7, Decimal(7)),
        ("1.5", Decimal("1.5")),
        ("x", None),
        (None, None),
        (True, None),
        ("1e2", None),
        (0.5, None),
    ],
)
def test_parse_plain_decimal(value: object, expected: Decimal | None) -> None:
    assert parse_plain_decimal(value) == expected


@pytest.mark.parametrize(
    ("amount", "exponent", "expected"),
    [
        ("0.005", 2, "0.01"),
        ("0.0049", 2, "0.00"),
        ("-0.005", 2, "-0.01"),
        ("2.675", 2, "2.68"),
        ("1.5", 0, "2"),
        ("2.5", 0, "3"),
        ("1.0005", 3, "1.001"),
    ],
)
def test_round_cents_half_up(amount: str, exponent: int, expected: str) -> None:
    assert round_cents(Decimal(amount), exponent) == Decimal(expected)


@pytest.mark.parametrize(
    ("amount", "currency", "cents", "precise"),
    [
        ("2", "USD", 200, "200"),
        ("0.125", "USD", 13, "12.5"),
        ("0.124999", "EUR", 12, "12.4999"),
        ("1234.5", "JPY", 1235, "1234.5"),
        ("99.4", "KRW", 99, "99.4"),
        ("1.2345", "KWD", 1235, "1234.5"),
        ("1.005", "usd", 101, "100.5"),
    ],
)
def test_amount_cents(amount: str, currency: str, cents: int, precise: str) -> None:
    assert amount_cents(Decimal(amount), currency) == cents
    assert precise_amount_cents(Decimal(amount), currency) == Decimal(precise)


def test_unknown_currency_defaults_to_two_decimals() -> None:
    assert currency_exponent("XYZ") == 2


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False))
def test_rounding_is_within_half_a_cent(amount: Decimal) -> None:
    rounded = round_cents(amount)
    assert abs(rounded - amount) <= Decimal("0.005")
    assert rounded == rounded.quantize(Decimal("0.01"))
    assert amount_cents(amount, "USD") == int(rounded * 100)
