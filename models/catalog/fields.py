"""Field types of catalog documents: the vocabulary and the annotated types.

The rating vocabulary (aggregations, charge models, intervals) is the enums of
``tallyflow.models.rating``; prices, cents, currencies and timezones are annotated types so
every document field states its rule once.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    PlainSerializer,
)

from tallyflow.models.catalog.canonical import format_datetime, format_decimal
from tallyflow.models.rating.aggregation import (
    AGGREGATIONS,
    RECURRING_ALLOWED,
    AggregationType,
    RoundingFunction,
)
from tallyflow.models.rating.charge_models import ChargeModel
from tallyflow.models.rating.money import CURRENCIES, PLAIN_DECIMAL
from tallyflow.models.rating.periods import BillingTime, Interval

TAX = "tax"


BILLING_ENTITY = "billing_entity"


BILLABLE_METRIC = "billable_metric"


PLAN = "plan"


CUSTOMER = "customer"


SUBSCRIPTION = "subscription"


WALLET = "wallet"


ADD_ON = "add_on"


COUPON = "coupon"


APPLIED_COUPON = "applied_coupon"


# Apply order: each kind only refers to kinds before it (an add-on names taxes only, a coupon
# plans and metrics, an applied coupon a customer and a coupon).
KINDS: tuple[str, ...] = (TAX, BILLING_ENTITY, BILLABLE_METRIC, PLAN, CUSTOMER, SUBSCRIPTION,
                          WALLET, ADD_ON, COUPON, APPLIED_COUPON)


# The rating vocabulary is defined once, as the enums of models/rating; the catalog accepts
# their values (in declaration order, which is the order error messages list them in).
AGGREGATION_TYPES = tuple(AggregationType)


NEEDS_FIELD_NAME = frozenset(kind for kind, agg in AGGREGATIONS.items() if agg.needs_field)


NEVER_RECURRING = frozenset(set(AggregationType) - RECURRING_ALLOWED)


NOT_PAY_IN_ADVANCE = frozenset(kind for kind, agg in AGGREGATIONS.items() if not agg.pay_in_advance)


CHARGE_MODELS = tuple(ChargeModel)


INTERVALS = tuple(Interval)


ROUNDING_FUNCTIONS = tuple(RoundingFunction)


WEIGHTED_INTERVALS = ("seconds",)


BILLING_TIMES = tuple(BillingTime)
# Lago's charge.regroup_paid_fees values (null is the default: no regrouping).
REGROUP_PAID_FEES = ("invoice",)


RULE_TRIGGERS = ("interval", "threshold")


RULE_METHODS = ("fixed", "target")


# Lago's coupon vocabulary (app/models/coupon.rb); the rules are models/coupons.py's.
COUPON_TYPES = ("fixed_amount", "percentage")


COUPON_FREQUENCIES = ("once", "recurring", "forever")


COUPON_EXPIRATIONS = ("no_expiration", "time_limit")


GROUP_KEY_PROPERTIES = ("pricing_group_keys", "grouped_by")


# The only numeric text form accepted for prices: the same text means the same number in
# Python, Postgres and Ruby (no exponents, no NaN, no spaces).
_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _decimal_string(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f'must be a decimal string such as "0.12", got a JSON '
                         f"{_json_type(value)} ({value!r})")
    if not PLAIN_DECIMAL.fullmatch(value):
        raise ValueError(f'must be a decimal string such as "0.12", got {value!r}')
    return Decimal(value)


def _number(value: Any) -> Decimal:
    """A non-price quantity (e.g. trial days): a JSON number or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"must be a number, not a {_json_type(value)}")
    if isinstance(value, str) and not PLAIN_DECIMAL.fullmatch(value):
        raise ValueError(f"must be a number; got {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError("must be a finite number")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not a JSON {_json_type(value)} ({value!r})")
    return value


def _not_negative(value: Decimal | int) -> Decimal | int:
    if value < 0:
        raise ValueError(f"must not be negative; got {value}")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"must be greater than 0; got {format_decimal(value)}")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _one_of(name: str, allowed: Sequence[str]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"unknown currency {value!r}; expected an ISO 4217 code such as USD")
    return value


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. America/New_York, UTC)")
    return value


def _email(value: str) -> str:
    # Lago accepts several addresses separated by commas.
    for address in value.split(","):
        if not _EMAIL.fullmatch(address.strip()):
            raise ValueError(f"not a valid email address: {address.strip()!r}")
    return value


def _priority(value: int) -> int:
    if not 1 <= value <= 50:
        raise ValueError(f"must be between 1 and 50; got {value}")
    return value


def _empty_when_null(default: Callable[[], Any]) -> BeforeValidator:
    # Lago clients often send ``"filters": null``; it means "none".
    return BeforeValidator(lambda value: default() if value is None else value)


_as_text = PlainSerializer(format_decimal, return_type=str)


_as_number = PlainSerializer(lambda value: value, return_type=Decimal)


Text = Annotated[str, AfterValidator(_text)]


Price = Annotated[Decimal, BeforeValidator(_decimal_string), _as_text]


Credits = Annotated[Decimal, BeforeValidator(_decimal_string), AfterValidator(_not_negative),
                    _as_text]


PositivePrice = Annotated[Decimal, BeforeValidator(_decimal_string), AfterValidator(_positive),
                          _as_text]


Cents = Annotated[int, BeforeValidator(_integer), AfterValidator(_not_negative)]


Integer = Annotated[int, BeforeValidator(_integer)]


Quantity = Annotated[Decimal, BeforeValidator(_number), AfterValidator(_not_negative),
                     _as_number]


Currency = Annotated[str, AfterValidator(_currency)]


Timezone = Annotated[str, AfterValidator(_timezone)]


Email = Annotated[str, AfterValidator(_email)]


Moment = Annotated[AwareDatetime, PlainSerializer(format_datetime, return_type=str)]
