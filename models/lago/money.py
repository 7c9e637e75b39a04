"""Money as Tallyflow writes it: Lago's JSON fields and the text people read
(docs/architecture.md §11). Rounding itself is ``models/rating/money.py`` (§3, invariant 1)."""

from __future__ import annotations

from decimal import Decimal

from tallyflow.models.rating.aggregation import tidy
from tallyflow.models.rating.money import format_money, from_minor
from tallyflow.models.wallets import cents_value, credits_text

__all__ = ["amount", "cents", "cents_text", "credits_text", "money", "plain"]


def money(cents: Decimal | int | str, currency: str) -> str:
    """Whole minor units as people read them: ``1234`` -> ``12.34 USD``. Takes the cents a
    JSON document holds (an integer or a decimal string) as well as a ``Decimal``."""
    return format_money(Decimal(str(cents)), currency)


def cents(value: Decimal) -> int | str:
    """Lago's ``*_amount_cents``: a JSON integer when whole."""
    return cents_value(value)


def amount(cents: Decimal | int, currency: str) -> str:
    """Lago's major-unit ``amount`` (``"12.34"``) of whole minor units."""
    return format(from_minor(Decimal(cents), currency), "f")


def plain(value: Decimal) -> str:
    """A decimal as Lago's JSON strings hold it (``units``, ``precise_amount_cents``): no
    exponent, no trailing zeros."""
    return format(tidy(value), "f")


def cents_text(value: Decimal) -> str:
    """Cents in a run's report and artifact: ``0`` for nothing, else every digit, no
    trailing zeros (``12.5``)."""
    return format(value.normalize(), "f") if value else "0"
