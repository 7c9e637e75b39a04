from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallyflow.models.rating.money import (
    CURRENCIES,
    MINOR_UNITS,
    WITHDRAWN,
    UnknownCurrency,
    amount_cents,
    exact_number,
    float_to_decimal,
    format_money,
    from_minor,
    is_plain_decimal,
    minor_units,
    parse_plain_decimal,
    precise_amount_cents,
    precise_minor,
    round_minor,
    to_minor,
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


# --------------------------------------------------------------------------------------------
# Currencies: the table against the ISO 4217 list (iso4217 package), Lago's minor units
# --------------------------------------------------------------------------------------------


def test_minor_units_match_iso_4217() -> None:
    iso4217 = pytest.importorskip("iso4217")
    iso = {c.code: c.exponent for c in iso4217.Currency}
    for code, units in MINOR_UNITS.items():
        if code in WITHDRAWN:
            assert code not in iso, f"{code} is back in ISO's list: move it out of WITHDRAWN"
            continue
        assert iso.get(code) == units, f"{code}: table {units}, ISO {iso.get(code)}"
    # Every active ISO currency with a minor unit is billable, except funds and units of account.
    funds = {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW", "XAD", "XSU", "XUA"}
    missing = {c for c, e in iso.items() if e is not None and c not in funds} - CURRENCIES
    assert not missing


@pytest.mark.parametrize(
    ("currency", "units", "subunit"),
    [
        ("USD", 2, 100),
        ("EUR", 2, 100),
        ("JPY", 0, 1),
        ("KRW", 0, 1),
        ("CLP", 0, 1),
        ("KWD", 3, 1000),
        ("BHD", 3, 1000),
        ("IQD", 3, 1000),  # Babel/CLDR says 0: Lago and ISO say 3
        ("HUF", 2, 100),  # Babel/CLDR says 0
        ("IDR", 2, 100),  # Babel/CLDR says 0
        ("COP", 2, 100),  # Babel/CLDR says 0
        ("jpy", 0, 1),
        ("HRK", 2, 100),  # withdrawn, still billable
    ],
)
def test_minor_units(currency: str, units: int, subunit: int) -> None:
    assert minor_units(currency) == units
    assert 10 ** minor_units(currency) == subunit


@pytest.mark.parametrize("code", ["XYZ", "", "US", "XAU", "XXX", "BTC"])
def test_unknown_currency_is_refused(code: str) -> None:
    with pytest.raises(UnknownCurrency, match="ISO 4217"):
        minor_units(code)


# --------------------------------------------------------------------------------------------
# The one rounding rule, in USD, JPY and KWD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),  # the wallet code used to give 1 for this
        ("0.005", "USD", "0.01"),
        ("0.0049", "USD", "0.00"),
        ("-0.005", "USD", "-0.01"),
        ("2.675", "USD", "2.68"),
        ("1.5", "JPY", "2"),
        ("2.5", "JPY", "3"),
        ("1234.49", "JPY", "1234"),
        ("1.0005", "KWD", "1.001"),
        ("1.0004", "KWD", "1.000"),
    ],
)
def test_major_units_round_half_up(amount: str, currency: str, expected: str) -> None:
    assert from_minor(to_minor(Decimal(amount), currency), currency) == Decimal(expected)


@pytest.mark.parametrize(
    ("minor", "expected"),
    [("100.5", 101), ("100.49", 100), ("-100.5", -101), ("0.5", 1), ("7", 7)],
)
def test_round_minor_half_up(minor: str, expected: int) -> None:
    assert round_minor(Decimal(minor)) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "cents", "precise"),
    [
        ("2", "USD", 200, "200"),
        ("0.125", "USD", 13, "12.5"),
        ("0.124999", "EUR", 12, "12.4999"),
        ("1.005", "usd", 101, "100.5"),
        ("1234.5", "JPY", 1235, "1234.5"),
        ("99.4", "KRW", 99, "99.4"),
        ("1.2345", "KWD", 1235, "1234.5"),
        ("0.0005", "KWD", 1, "0.5"),
    ],
)
def test_to_minor(amount: str, currency: str, cents: int, precise: str) -> None:
    assert to_minor(Decimal(amount), currency) == cents
    assert precise_minor(Decimal(amount), currency) == Decimal(precise)
    assert amount_cents(Decimal(amount), currency) == cents
    assert precise_amount_cents(Decimal(amount), currency) == Decimal(precise)


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [(1234, "USD", "12.34"), (1234, "JPY", "1234"), (1234, "KWD", "1.234"),
     (Decimal("1234.5"), "JPY", "1234.5"), (Decimal("1234.5"), "USD", "12.345")],
)
def test_from_minor_is_exact(minor: Decimal | int, currency: str, major: str) -> None:
    assert from_minor(minor, currency) == Decimal(major)


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(1234, "USD", "12.34 USD"), (1234, "JPY", "1234 JPY"), (1234, "KWD", "1.234 KWD"),
     (5, "USD", "0.05 USD"), (0, "KWD", "0.000 KWD"),
     # a billion events at the number rule's bound: every digit shown, none rounded away
     (10**37 + 1, "USD", "1" + "0" * 35 + ".01 USD")],
)
def test_format_money(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


@settings(max_examples=300, deadline=None)
@given(
    st.decimals(min_value=-(10**9), max_value=10**9, places=7, allow_nan=False),
    st.sampled_from(["USD", "JPY", "KWD", "EUR", "BHD", "CLP"]),
)
def test_one_rule_in_both_units(amount: Decimal, currency: str) -> None:
    """Rounding in major units and in minor units is the same rule: same result."""
    rounded = from_minor(to_minor(amount, currency), currency)
    assert abs(rounded - amount) <= Decimal(1).scaleb(-minor_units(currency)) / 2
    assert to_minor(amount, currency) == round_minor(precise_minor(amount, currency))


# --------------------------------------------------------------------------------------------
# Exact numbers from every format
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, "0.1"),
        (1e-05, "0.00001"),
        (1234.5, "1234.5"),
        (2.675, "2.675"),  # Decimal(2.675) is 2.67499999999999982236431605997495353221893...
        (1e20, "100000000000000000000"),
        (-0.0, "0"),
        (123456789.12345679, "123456789.12345679"),
    ],
)
def test_float_to_decimal_shortest_round_trip(value: float, expected: str) -> None:
    assert float_to_decimal(value) == Decimal(expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_to_decimal_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        float_to_decimal(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1E-7"), Decimal("0.0000001")),
        (Decimal("0.1"), Decimal("0.1")),
        (3, Decimal(3)),
        ("1234", Decimal(1234)),
        (0.1, Decimal("0.1")),
        ("1e3", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        (Decimal("Infinity"), None),
    ],
)
def test_exact_number(value: object, expected: Decimal | None) -> None:
    assert exact_number(value) == expected
