"""Money as Lago's fields and as people read it (docs/architecture.md §11)."""

from decimal import Decimal

import pytest

from tallyflow.models.lago.money import amount, cents, cents_text, money, plain


@pytest.mark.parametrize("given", [1234, Decimal(1234), "1234", Decimal("1234.0")])
def test_money_reads_the_cents_of_any_json_form(given: object) -> None:
    assert money(given, "USD") == "12.34 USD"  # type: ignore[arg-type]


@pytest.mark.parametrize(("cents_", "currency", "expected"), [
    (1234, "JPY", "1234 JPY"),
    (Decimal("100.5"), "USD", "1.01 USD"),  # ROUND_HALF_UP to a whole cent
    (-5, "EUR", "-0.05 EUR"),
    (10**30, "USD", "10000000000000000000000000000.00 USD"),  # every digit
])
def test_money_is_the_one_human_form(cents_: int | Decimal, currency: str, expected: str) -> None:
    assert money(cents_, currency) == expected


def test_lagos_field_forms() -> None:
    assert cents(Decimal("1500")) == 1500
    assert amount(1234, "USD") == "12.34"
    assert amount(Decimal("1234"), "JPY") == "1234"
    assert plain(Decimal("1.2300")) == "1.23"
    assert plain(Decimal("1E+3")) == "1000"


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal(0), "0"), (Decimal("0.00"), "0"), (Decimal("1500"), "1500"),
    (Decimal("12.50"), "12.5"),
])
def test_cents_text_of_a_report(value: Decimal, expected: str) -> None:
    assert cents_text(value) == expected
