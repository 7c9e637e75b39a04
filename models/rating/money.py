"""Money and numbers: the one home of currencies, minor units, exact parsing and rounding.

Every amount in Tallyflow is a ``Decimal``; binary floating point is refused at the door
because a float has already lost the customer's digits before we could round them.

Units, named everywhere so that no caller has to guess:
- *major* units: dollars, yen, dinars (what charge models return; prices are in major units);
- *minor* units: cents, yen, fils: Lago's ``*_amount_cents`` fields. A currency has
  ``10 ** minor_units(currency)`` minor units to the major one (ISO 4217 "minor unit": USD 2,
  JPY 0, KWD 3), as Lago's ``money`` library counts them (its ``subunit_to_unit``);
- *precise* minor units: unrounded minor units, kept next to the rounded ones.

One rounding rule for money: ROUND_HALF_UP (ties away from zero, which is also what
PostgreSQL's ``round(numeric)`` does) to a whole minor unit: :func:`round_minor`, which
:func:`to_minor` applies to major units (a property test pins that both routes agree), so
rating, wallets, snapshots and SQL all round alike.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Final

from tallyflow.models.number_rule import in_range

# ASCII digits only: Python's \d also matches other scripts' digits, which Postgres and Lago
# would not read as numbers. Always used with fullmatch (``$`` would accept a trailing newline).
PLAIN_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")

# Arithmetic on quantities and amounts: wide enough that no sum or conversion is rounded before
# the one explicit rounding (Python's default context keeps 28 significant digits, which cut
# 12345678901234567890.123456789 tokens to ...123456790).
WIDE: Final = Context(prec=200)

# --------------------------------------------------------------------------------------------
# Currencies: ISO 4217 list one (active currencies; funds, metals, testing and "no currency"
# codes left out), with their minor units. Generated from the `iso4217` package's copy of the
# ISO list and checked against it by tests/models/rating/test_money.py, so an ISO change shows
# up as a failing test instead of silently changing how an invoice is rounded.
# --------------------------------------------------------------------------------------------

_BY_MINOR_UNITS: Final[dict[int, str]] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF",
    2: """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
    CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD
    HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA
    MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN
    QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP
    TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
    """,
    3: "BHD IQD JOD KWD LYD OMR TND",
}
# Withdrawn from ISO's current list recently (replaced by XCG, EUR, SLE, ZWG; CUC retired), but
# catalogs and ledgers written in them must still apply and rate. All had 2 minor units.
WITHDRAWN: Final = frozenset("ANG BGN CUC HRK SLL ZWL".split())

MINOR_UNITS: Final[dict[str, int]] = {
    **{code: units for units, codes in _BY_MINOR_UNITS.items() for code in codes.split()},
    **dict.fromkeys(sorted(WITHDRAWN), 2),
}
CURRENCIES: Final = frozenset(MINOR_UNITS)


class UnknownCurrency(ValueError):
    """A currency code outside the table: refusing beats guessing two decimals."""


def minor_units(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (ISO 4217 minor unit): USD 2, JPY 0."""
    try:
        return MINOR_UNITS[currency.upper()]
    except KeyError:
        raise UnknownCurrency(
            f"unknown currency {currency!r}; expected an ISO 4217 code such as USD"
        ) from None


def is_plain_decimal(text: str) -> bool:
    """True for the only numeric text form Lago accepts in a property (``^-?\\d+(\\.\\d+)?$``).

    Exponents, signs other than a leading minus, spaces, NaN and Infinity are refused so that
    the same text always means the same number in Python, Postgres and Ruby.
    """
    return isinstance(text, str) and PLAIN_DECIMAL.fullmatch(text) is not None


def float_to_decimal(value: float) -> Decimal:
    """The documented rule for binary floats that arrive from typed formats (Parquet, Arrow).

    A double is converted through its *shortest round-trip text* (Python's ``repr``: the
    fewest digits that read back as the same double), so a column value written as 0.1 becomes
    ``Decimal("0.1")``, not ``Decimal(0.1)`` = 0.1000000000000000055511151231257827... That is
    the number the producer meant whenever it had at most 15-17 significant digits, and never
    a number the double does not represent. NaN and infinities raise ``ValueError``.
    """
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return Decimal(repr(value))


def exact_number(value: object) -> Decimal | None:
    """Any numeric input (JSON number read as Decimal, int, float by the rule above, or a plain
    decimal string) as an exact ``Decimal``; ``None`` when it is not a finite number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return float_to_decimal(value) if math.isfinite(value) else None
    if isinstance(value, str) and is_plain_decimal(value):
        return Decimal(value)
    return None


def parse_plain_decimal(value: object) -> Decimal | None:
    """Read an event property as a number, or ``None`` when it is not a plain decimal.

    Used for event values where a bad value must not fail the batch: it is simply not counted
    (and reported as unbillable by the caller). Numeric strings (``"1234"``) count exactly as
    numbers do, as in Lago, within the number rule's bound (docs/architecture.md §7): ingest
    refuses JSON numbers outside it, and a string outside it (an id made of digits, say) is
    not read as a number, so no value an aggregation sums can overflow what follows.
    """
    if isinstance(value, float):
        return None  # property values arrive as JSON text or Decimal; a float is a bug upstream
    number = exact_number(value)
    return number if number is not None and in_range(number) else None


def plain_text(value: Decimal) -> str:
    """Positional text of a finite decimal (``1E-7`` -> ``0.0000001``): the form Lago accepts."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    return format(value, "f")


# --------------------------------------------------------------------------------------------
# Conversions and the one rounding rule
# --------------------------------------------------------------------------------------------


def round_minor(minor: Decimal | int) -> Decimal:
    """Minor units rounded ROUND_HALF_UP to a whole minor unit (100.5 cents -> 101)."""
    return Decimal(minor).quantize(Decimal(1), rounding=ROUND_HALF_UP, context=WIDE)


def precise_minor(amount: Decimal, currency: str) -> Decimal:
    """Unrounded minor units of a major-unit amount; kept next to the rounded one for audit."""
    return Decimal(amount).scaleb(minor_units(currency), context=WIDE)


def to_minor(amount: Decimal, currency: str) -> int:
    """Major-unit amount -> whole minor units (``amount_cents``), ROUND_HALF_UP."""
    return int(round_minor(precise_minor(amount, currency)))


def from_minor(minor: Decimal | int, currency: str) -> Decimal:
    """Minor units (precise or whole) -> major units, exactly (no rounding)."""
    return Decimal(minor).scaleb(-minor_units(currency), context=WIDE)


def format_money(minor: Decimal | int, currency: str) -> str:
    """Whole minor units as people read them: ``1234`` -> ``12.34 USD``, ``1234 JPY``."""
    units = minor_units(currency)
    major = round_minor(minor).scaleb(-units, WIDE)  # every digit of a huge amount
    return f"{major:.{units}f} {currency}"


# Lago's field names for the same conversions (Fee and usage payloads use them).
amount_cents = to_minor
precise_amount_cents = precise_minor
