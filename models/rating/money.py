"""Money and number helpers shared by the rating code.

Every amount in Tallyflow is a ``Decimal``; binary floating point is refused at the door
because a float has already lost the customer's digits before we could round them.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

# ASCII digits only: Python's \d also matches other scripts' digits, which Postgres and Lago
# would not read as numbers. Always used with fullmatch (``$`` would accept a trailing newline).
PLAIN_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")

# ISO 4217 minor-unit exponents that differ from the usual 2. Lago (through the `money` gem)
# stores "cents" as the smallest unit of the currency, so a JPY amount in cents is yen.
_NO_DECIMALS: Final = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split()
)
_THREE_DECIMALS: Final = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
DEFAULT_EXPONENT: Final = 2


def is_plain_decimal(text: str) -> bool:
    """True for the only numeric text form Lago accepts in a property (``^-?\\d+(\\.\\d+)?$``).

    Exponents, signs other than a leading minus, spaces, NaN and Infinity are refused so that
    the same text always means the same number in Python, Postgres and Ruby.
    """
    return isinstance(text, str) and PLAIN_DECIMAL.fullmatch(text) is not None


def to_decimal(value: Decimal | int | str) -> Decimal:
    """Convert a trusted numeric input to ``Decimal``; floats and odd text raise.

    ``bool`` is refused although it is an ``int`` subclass, since ``True`` as a price is always
    a bug upstream.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite decimal: {value}")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        if not is_plain_decimal(value):
            raise ValueError(f"not a plain decimal string: {value!r}")
        return Decimal(value)
    raise TypeError(f"refusing {type(value).__name__}: use Decimal, int or a decimal string")


def parse_plain_decimal(value: object) -> Decimal | None:
    """Read an event property as a number, or ``None`` when it is not a plain decimal.

    Used for event values where a bad value must not fail the batch: it is simply not counted
    (and reported as unbillable by the caller).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and is_plain_decimal(value):
        return Decimal(value)
    return None


def currency_exponent(currency: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency (2 unless known otherwise)."""
    code = currency.upper()
    if code in _NO_DECIMALS:
        return 0
    return 3 if code in _THREE_DECIMALS else DEFAULT_EXPONENT


def round_cents(amount: Decimal, exponent: int = DEFAULT_EXPONENT) -> Decimal:
    """Round a major-unit amount to ``exponent`` decimals, half away from zero (Lago's rule)."""
    return amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)


def precise_amount_cents(amount: Decimal, currency: str) -> Decimal:
    """Unrounded amount in minor units; kept next to the rounded one for audit and re-sums."""
    return amount * (10 ** currency_exponent(currency))


def amount_cents(amount: Decimal, currency: str) -> int:
    """Major-unit amount -> integer minor units, ROUND_HALF_UP at the currency exponent."""
    exponent = currency_exponent(currency)
    return int(round_cents(amount, exponent).scaleb(exponent))
