"""Catalog documents in Lago's own request shapes: parse, validate, normalise. Pure: no I/O.

A Lago user should be able to paste the bodies they send to ``POST /api/v1/plans`` (and the
other catalog endpoints) into a file and apply them. So the models accept Lago's envelopes and
field names as they are, and no field is ever accepted and then ignored. Every field is one of:
- *consumed*: declared on the model and billed as Lago bills it;
- *no effect*: a Lago field documented here as changing nothing Tallyflow computes (read-only
  fields of an export such as ``lago_id``, contact details), kept in the stored document;
- *not supported yet*: a Lago field whose billing Tallyflow does not implement; refused by
  name ("not supported yet") when it is given a value that would change a bill (a plan fee,
  taxes, a trial, pay in advance, ...); empty values (``[]``, ``null``, ``0``, ``false``) are
  what "absent" means in a Lago export and are accepted;
- anything else: refused as an unknown field.
``tests/models/test_catalog_fields.py`` fails when a declared field is in none of the three.

Validation never stops at the first problem: every issue of every document of an apply is
collected with its file and JSON path, because a person fixing a catalog wants the whole list
at once. Cross-references are checked against the catalog as it will be *after* the apply (the
database overlaid with the files), so a file may refer to something defined in another file or
already applied earlier.

Money: prices are decimal strings, read as ``Decimal``. JSON documents are parsed with
``parse_float=Decimal`` (see ``tasks.catalog``) so no value ever passes through binary floating
point; a price given as a JSON number is refused because a number in JSON has no agreed
precision between clients.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from models.lifecycle import ON_TERMINATION_INVOICE
from models.rating.aggregation import RECURRING_ALLOWED, AggregationType, RoundingFunction
from models.rating.charge_models import ChargeModel, JsonNumber, validate_properties
from models.rating.filters import ALL_FILTER_VALUES
from models.rating.money import CURRENCIES, PLAIN_DECIMAL
from models.rating.periods import BillingTime, Interval

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

TAX = "tax"
BILLING_ENTITY = "billing_entity"
BILLABLE_METRIC = "billable_metric"
PLAN = "plan"
CUSTOMER = "customer"
SUBSCRIPTION = "subscription"
WALLET = "wallet"
# Apply order: each kind only refers to kinds before it.
KINDS: tuple[str, ...] = (TAX, BILLING_ENTITY, BILLABLE_METRIC, PLAN, CUSTOMER, SUBSCRIPTION,
                          WALLET)

# The rating vocabulary is defined once, as the enums of models/rating; the catalog accepts
# their values (in declaration order, which is the order error messages list them in).
AGGREGATION_TYPES = tuple(AggregationType)
NEEDS_FIELD_NAME = frozenset(set(AggregationType) - {AggregationType.COUNT})
NEVER_RECURRING = frozenset(set(AggregationType) - RECURRING_ALLOWED)
NOT_PAY_IN_ADVANCE = frozenset(
    {AggregationType.MAX, AggregationType.LATEST, AggregationType.WEIGHTED_SUM}
)
CHARGE_MODELS = tuple(ChargeModel)
INTERVALS = tuple(Interval)
ROUNDING_FUNCTIONS = tuple(RoundingFunction)
WEIGHTED_INTERVALS = ("seconds",)
BILLING_TIMES = tuple(BillingTime)
RULE_TRIGGERS = ("interval", "threshold")
RULE_METHODS = ("fixed", "target")
GROUP_KEY_PROPERTIES = ("pricing_group_keys", "grouped_by")

# Currencies a bill can be issued in: models.rating.money.CURRENCIES (ISO 4217, minor units).

# The only numeric text form accepted for prices: the same text means the same number in
# Python, Postgres and Ruby (no exponents, no NaN, no spaces).
_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class Issue(NamedTuple):
    """One problem inside one document: where (a JSON path as a tuple) and why."""

    loc: Loc
    message: str


@dataclass(frozen=True)
class CatalogError:
    """One problem of an apply, as people read it: ``file: json.path: reason``."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "path": self.path, "message": self.message}


class CatalogValidationError(ValueError):
    """Raised by helpers that cannot return partial results; carries every error found."""

    def __init__(self, errors: Sequence[CatalogError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(loc: Iterable[str | int]) -> str:
    """``("plan", "charges", 0, "properties", "amount")`` ->
    ``plan.charges[0].properties.amount``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "."


# --------------------------------------------------------------------------------------------
# Canonical JSON (Decimal-safe) and digests
# --------------------------------------------------------------------------------------------


def format_datetime(moment: datetime) -> str:
    """UTC ISO-8601 with ``Z``: one text per instant so digests do not depend on the offset."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_decimal(value: Decimal) -> str:
    """Plain positional text (``1E+2`` -> ``100``), the form Postgres jsonb also writes back."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    return format(value, "f")


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """JSON text with sorted keys; ``Decimal`` written as a JSON number without float.

    The standard encoder can only write Decimals through float, which would lose digits, so the
    catalog writes its own (small) JSON. Floats are refused outright.
    """
    out: list[str] = []
    _write_json(obj, out, indent, 0)
    return "".join(out)


def _write_json(obj: Any, out: list[str], indent: int | None, level: int) -> None:
    if obj is None or isinstance(obj, bool):
        out.append({None: "null", True: "true", False: "false"}[obj])
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, Decimal):
        out.append(format_decimal(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, datetime):
        out.append(json.dumps(format_datetime(obj)))
    elif isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))]
        _write_container("{", "}", items, out, indent, level)
    elif isinstance(obj, list | tuple):
        _write_container("[", "]", [(None, v) for v in obj], out, indent, level)
    else:
        raise TypeError(f"cannot write {type(obj).__name__} as catalog JSON (floats are refused)")


def _write_container(
    open_: str,
    close: str,
    items: Sequence[tuple[str | None, Any]],
    out: list[str],
    indent: int | None,
    level: int,
) -> None:
    if not items:
        out.append(open_ + close)
        return
    inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
    outer = "" if indent is None else "\n" + " " * (indent * level)
    out.append(open_)
    for position, (key, value) in enumerate(items):
        out.append(("," if position else "") + inner)
        if key is not None:
            out.append(json.dumps(key, ensure_ascii=False) + (":" if indent is None else ": "))
        _write_json(value, out, indent, level + 1)
    out.append(outer + close)


def loads(text: str) -> Any:
    """JSON text -> Python with every non-integer number as ``Decimal`` (never float)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def digest(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON: equal documents, equal digests, whatever the key order."""
    return hashlib.sha256(dumps(document).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Models (Lago envelope bodies)
# --------------------------------------------------------------------------------------------


class LagoModel(BaseModel):
    """Fields beyond the declared ones are held (``extra="allow"``) only so that
    :func:`field_issues` can judge each by name: documented no-effect fields are kept, fields
    not supported yet and unknown fields are refused with their JSON path.
    """

    model_config = ConfigDict(extra="allow")

    # Lago fields that change nothing Tallyflow computes (any value accepted and kept).
    NO_EFFECT: ClassVar[frozenset[str]] = frozenset()
    # Lago fields not billed yet -> what they do; refused when given a non-empty value.
    NOT_SUPPORTED: ClassVar[dict[str, str]] = {}
    # Declared (consumed) fields whose values other than the default are not billed yet:
    # field -> (predicate on the value meaning "not supported", what it does).
    NOT_SUPPORTED_VALUES: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}


_EXPORT_FIELDS = frozenset({"lago_id", "created_at", "updated_at", "organization_id"})
_COUNTS = frozenset({"active_subscriptions_count", "draft_invoices_count", "plans_count",
                     "subscriptions_count"})


def _true(value: Any) -> bool:
    return value is True


def _false(value: Any) -> bool:
    return value is False


def _positive_number(value: Any) -> bool:
    return value is not None and value > 0


TaxCodes = Annotated[list[Text], _empty_when_null(list)]


class Tax(LagoModel):
    """Lago's tax object: ``rate`` is a percentage (``"20.0"`` = 20 %). Taxes with
    ``applied_to_organization`` apply to every fee that names no tax code of its own."""

    code: Text
    name: Text
    rate: Quantity
    description: str | None = None
    applied_to_organization: bool = False

    NO_EFFECT = _EXPORT_FIELDS | {"add_ons_count", "charges_count", "customers_count",
                                  "plans_count", "auto_generated"}


class BillingEntity(LagoModel):
    """The issuer of invoices (Lago's ``billing_entity``): who bills, the invoice number
    prefix, and the default taxes of its customers."""

    code: Text
    name: Text
    email: Email | None = None
    legal_name: str | None = None
    legal_number: str | None = None
    tax_identification_number: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    zipcode: str | None = None
    state: str | None = None
    country: str | None = None
    invoice_footer: str | None = None
    document_number_prefix: Text | None = None
    is_default: bool = False
    tax_codes: TaxCodes = []
    invoice_grace_period: Annotated[Integer, AfterValidator(_not_negative)] | None = None
    net_payment_term: Annotated[Integer, AfterValidator(_not_negative)] | None = None

    NO_EFFECT = _EXPORT_FIELDS | {"logo_url", "email_settings", "phone", "website"}
    NOT_SUPPORTED = {
        "default_currency": "a default currency for the entity's customers",
        "timezone": "a default timezone for the entity's customers",
        "document_numbering": "numbering invoices per billing entity",
        "finalize_zero_amount_invoice": "rules for zero-amount invoices",
        "eu_tax_management": "EU tax rules",
    }


class MetricFilterPayload(LagoModel):
    """A metric's ``filters[]`` item as Lago sends it (the payload shape only); the rating
    type is ``models.rating.filters.MetricFilter``."""

    key: Text
    values: list[Text] = Field(min_length=1)

    NO_EFFECT = _EXPORT_FIELDS


class BillableMetric(LagoModel):
    code: Text
    name: Text
    description: str | None = None
    aggregation_type: Annotated[str, _one_of("aggregation_type", AGGREGATION_TYPES)]
    field_name: str | None = None
    recurring: bool = False
    rounding_function: Annotated[str, _one_of("rounding_function", ROUNDING_FUNCTIONS)] | None = (
        None
    )
    rounding_precision: Integer | None = None
    weighted_interval: (
        Annotated[str, _one_of("weighted_interval", WEIGHTED_INTERVALS)] | None
    ) = None
    filters: Annotated[list[MetricFilterPayload], _empty_when_null(list)] = []

    NO_EFFECT = _EXPORT_FIELDS | _COUNTS
    NOT_SUPPORTED = {"expression": "custom expressions computing the aggregated field"}


class ChargeFilterPayload(LagoModel):
    """A charge's ``filters[]`` item as Lago sends it; matching is
    ``models.rating.filters.ChargeFilter`` (built by ``charge_filter_from_values``)."""

    values: dict[str, list[str]]
    properties: Annotated[dict[str, Any], _empty_when_null(dict)] = {}
    invoice_display_name: str | None = None

    NO_EFFECT = _EXPORT_FIELDS


class Charge(LagoModel):
    billable_metric_code: Text | None = None
    billable_metric_id: Text | None = None
    charge_model: Annotated[str, _one_of("charge_model", CHARGE_MODELS)]
    properties: Annotated[dict[str, Any], _empty_when_null(dict)] = {}
    filters: Annotated[list[ChargeFilterPayload], _empty_when_null(list)] = []
    pay_in_advance: bool = False
    invoiceable: bool = True
    prorated: bool = False
    min_amount_cents: Cents = 0
    invoice_display_name: str | None = None
    tax_codes: TaxCodes = []

    NO_EFFECT = _EXPORT_FIELDS | {"lago_billable_metric_id", "taxes", "code"}
    NOT_SUPPORTED = {
        "regroup_paid_fees": "regrouping pay-in-advance fees on invoices",
        "applied_pricing_unit": "custom pricing units",
    }
    NOT_SUPPORTED_VALUES = {
        "pay_in_advance": (_true, "billing the charge per event, in advance"),
        "invoiceable": (_false, "pay-in-advance charges kept off invoices"),
        "prorated": (_true, "prorating the charge over the period"),
    }

    @property
    def metric_code(self) -> str | None:
        """Tallyflow matches billable_metric_id against metric codes (Lago's ids are UUIDs
        that a file cannot know; the published templates put the code there)."""
        return self.billable_metric_code or self.billable_metric_id

    @property
    def pricing_group_keys(self) -> list[str]:
        for name in GROUP_KEY_PROPERTIES:
            keys = self.properties.get(name)
            if isinstance(keys, list) and keys:
                return [str(k) for k in keys]
        return []


class MinimumCommitment(LagoModel):
    """A plan's spending floor per period (Lago's ``minimum_commitment``); the fees below it
    are trued up by a ``commitment`` fee on the invoice."""

    amount_cents: Cents
    invoice_display_name: str | None = None

    NO_EFFECT = _EXPORT_FIELDS | {"plan_code", "interval", "taxes"}
    NOT_SUPPORTED = {"tax_codes": "taxes of their own on commitment fees (the plan's apply)"}


class Plan(LagoModel):
    code: Text
    name: Text
    description: str | None = None
    interval: Annotated[str, _one_of("interval", INTERVALS)]
    amount_cents: Cents
    amount_currency: Currency
    pay_in_advance: bool = False
    trial_period: Quantity | None = None
    charges: Annotated[list[Charge], _empty_when_null(list)] = []
    invoice_display_name: str | None = None
    tax_codes: TaxCodes = []
    minimum_commitment: MinimumCommitment | None = None

    NO_EFFECT = _EXPORT_FIELDS | _COUNTS | {"taxes", "parent_id", "cascade_updates",
                                            "pending_deletion"}
    NOT_SUPPORTED = {
        "usage_thresholds": "progressive billing at usage thresholds",
        "bill_charges_monthly": "monthly charges on a yearly plan",
        "bill_fixed_charges_monthly": "monthly fixed charges on a yearly plan",
        "fixed_charges": "fixed charges",
    }
    NOT_SUPPORTED_VALUES = {
        "pay_in_advance": (_true, "the subscription fee paid in advance"),
    }


class Customer(LagoModel):
    external_id: Text
    name: str | None = None
    email: Email | None = None
    currency: Currency | None = None
    timezone: Timezone | None = None
    tax_codes: TaxCodes = []
    invoice_grace_period: Annotated[Integer, AfterValidator(_not_negative)] | None = None
    net_payment_term: Annotated[Integer, AfterValidator(_not_negative)] | None = None
    billing_entity_code: Text | None = None

    # Contact and integration details: they change no amount Tallyflow computes.
    NO_EFFECT = _EXPORT_FIELDS | {
        "firstname", "lastname", "customer_type", "account_type", "legal_name", "legal_number",
        "tax_identification_number", "address_line1", "address_line2", "city", "zipcode",
        "state", "country", "phone", "url", "logo_url", "shipping_address", "metadata",
        "integration_customers", "sequential_id", "slug", "applicable_timezone",
        "external_salesforce_id", "taxes",
        "applicable_invoice_grace_period",
        "skip_invoice_custom_sections", "invoice_custom_section_codes",
    }
    NOT_SUPPORTED = {
        "finalize_zero_amount_invoice": "rules for zero-amount invoices",
        "billing_configuration": "billing configuration (grace period, payment provider)",
    }


class Subscription(LagoModel):
    external_id: Text
    external_customer_id: Text
    plan_code: Text
    name: str | None = None
    billing_time: Annotated[str, _one_of("billing_time", BILLING_TIMES)] = "calendar"
    subscription_at: Moment | None = None
    # The planned end (models/lifecycle.py): usage after it is unbillable and the partial
    # period is invoiced at once, unless on_termination_invoice is "skip".
    ending_at: Moment | None = None
    # None is Lago's default, "generate" (left out so that older documents keep their digest)
    on_termination_invoice: Annotated[
        str, _one_of("on_termination_invoice", ON_TERMINATION_INVOICE)] | None = None

    NO_EFFECT = _EXPORT_FIELDS | {
        "lago_customer_id", "status", "started_at", "canceled_at", "terminated_at",
        "previous_plan_code", "next_plan_code", "downgrade_plan_date", "trial_ended_at",
        "current_billing_period_started_at", "current_billing_period_ending_at",
    }
    NOT_SUPPORTED = {
        "plan_overrides": "per-subscription plan overrides",
        "usage_thresholds": "progressive billing at usage thresholds",
        "on_termination_credit_note": "credit notes for the unused part of a period",
    }


class RecurringRule(LagoModel):
    trigger: Annotated[str, _one_of("trigger", RULE_TRIGGERS)]
    interval: Annotated[str, _one_of("interval", INTERVALS)] | None = None
    method: Annotated[str, _one_of("method", RULE_METHODS)] = "fixed"
    paid_credits: Credits = Decimal(0)
    granted_credits: Credits = Decimal(0)
    threshold_credits: Credits | None = None
    target_ongoing_balance: Credits | None = None
    started_at: Moment | None = None
    expiration_at: Moment | None = None

    NO_EFFECT = _EXPORT_FIELDS | {"status", "transaction_metadata", "transaction_name",
                                  "ignore_paid_top_up_limits"}
    NOT_SUPPORTED = {
        "invoice_requires_successful_payment": "top-ups granted only once their invoice is paid",
    }


class Wallet(LagoModel):
    external_customer_id: Text
    name: str | None = None
    code: Text | None = None
    currency: Currency
    rate_amount: PositivePrice
    paid_credits: Credits = Decimal(0)
    granted_credits: Credits = Decimal(0)
    priority: Annotated[Integer, AfterValidator(_priority)] = 50
    expiration_at: Moment | None = None
    recurring_transaction_rules: Annotated[list[RecurringRule], _empty_when_null(list)] = []

    # Read-only balances of an export: Tallyflow's ledger computes its own.
    NO_EFFECT = _EXPORT_FIELDS | {
        "lago_customer_id", "status", "balance_cents", "credits_balance",
        "ongoing_balance_cents", "ongoing_usage_balance_cents", "credits_ongoing_balance",
        "credits_ongoing_usage_balance", "consumed_credits", "consumed_amount_cents",
        "last_balance_sync_at", "last_consumed_credit_at", "last_ongoing_balance_sync_at",
        "terminated_at", "transaction_metadata", "transaction_name",
    }
    NOT_SUPPORTED = {
        "applies_to": "wallets limited to some fee types or metrics",
        "invoice_requires_successful_payment": "top-ups granted only once their invoice is paid",
        "paid_top_up_min_amount_cents": "limits on paid top-ups",
        "paid_top_up_max_amount_cents": "limits on paid top-ups",
    }


MODELS: dict[str, type[LagoModel]] = {
    TAX: Tax,
    BILLING_ENTITY: BillingEntity,
    BILLABLE_METRIC: BillableMetric,
    PLAN: Plan,
    CUSTOMER: Customer,
    SUBSCRIPTION: Subscription,
    WALLET: Wallet,
}


def wallet_code(name: str | None) -> str:
    """A wallet's natural key within its customer when no code is given: a slug of its name."""
    slug = re.sub(r"[^a-z0-9]+", "_", (name or "").lower()).strip("_")
    return slug or "default"


def natural_key(kind: str, model: LagoModel) -> tuple[str, ...]:
    """The key an object is upserted by (what Lago users already use to refer to it)."""
    if isinstance(model, Tax | BillingEntity | BillableMetric | Plan):
        return (model.code,)
    if isinstance(model, Customer | Subscription):
        return (model.external_id,)
    if isinstance(model, Wallet):
        return (model.external_customer_id, model.code or wallet_code(model.name))
    raise ValueError(f"unknown catalog kind {kind!r}")


def describe_key(kind: str, key: tuple[str, ...]) -> str:
    return f"{kind} {'/'.join(key)!r}"


def normalise(model: LagoModel) -> dict[str, Any]:
    """The document stored and exported: defaults filled in, nulls dropped, extras kept.

    Filling defaults makes ``{"recurring": false}`` and an omitted ``recurring`` the same
    document (same digest), so only a real change counts as an update.
    """
    return model.model_dump(mode="python", exclude_none=True)


# --------------------------------------------------------------------------------------------
# Charge properties: the rules live with the charge models (models.rating.charge_models)
# --------------------------------------------------------------------------------------------


def _as_file_input(value: Any) -> Any:
    """File numbers (Decimal, read from their text) marked as such: prices refuse them, range
    bounds accept them (see ``models.rating.charge_models.JsonNumber``)."""
    if isinstance(value, Decimal):
        return JsonNumber(value)
    if isinstance(value, Mapping):
        return {k: _as_file_input(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_file_input(v) for v in value]
    return value


def _properties_messages(charge_model: str, properties: Mapping[str, Any]) -> list[str]:
    """Every problem of one charge's (or filter's) properties, each ``"<path>: <reason>"``."""
    return [*_group_key_errors(properties),
            *validate_properties(charge_model, _as_file_input(properties))]


def _group_key_errors(properties: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    for name in GROUP_KEY_PROPERTIES:
        keys = properties.get(name)
        if keys is None:
            continue
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            errors.append(f"{name}: must be a list of property names")
    given = [properties.get(n) for n in GROUP_KEY_PROPERTIES if properties.get(n)]
    if len(given) == 2 and given[0] != given[1]:
        errors.append("grouped_by: conflicts with pricing_group_keys; give only one of them")
    return errors


def _prices_given(properties: Mapping[str, Any]) -> bool:
    # Empty properties are valid in Lago: the bucket prices at 0 (Lago fills zero defaults).
    return any(key not in GROUP_KEY_PROPERTIES for key in properties)


def _property_issues(
    charge_model: str, properties: Mapping[str, Any], loc: Loc
) -> list[Issue]:
    """Property messages (``"graduated_ranges[1].from_value: reason"``) as issues whose
    location continues the charge's JSON path, so the error names the exact field."""
    if _prices_given(properties):
        messages = _properties_messages(charge_model, properties)
    else:
        messages = _group_key_errors(properties)
    issues = []
    for message in messages:
        where, _, reason = message.partition(": ")
        sub = tuple(int(p) if p.isdigit() else p
                    for p in re.split(r"\.|\[|\]\.?", where) if p != "")
        issues.append(Issue((*loc, *sub), reason))
    return issues


# --------------------------------------------------------------------------------------------
# Rules inside one document
# --------------------------------------------------------------------------------------------


def _metric_issues(metric: BillableMetric) -> list[Issue]:
    issues: list[Issue] = []
    agg = metric.aggregation_type
    if agg in NEEDS_FIELD_NAME and not (metric.field_name or "").strip():
        issues.append(Issue(("field_name",), f"is required for {agg}"))
    if metric.recurring and agg in NEVER_RECURRING:
        issues.append(Issue(("recurring",), f"{agg} cannot be recurring"))
    if agg == AggregationType.WEIGHTED_SUM and metric.weighted_interval is None:
        issues.append(Issue(("weighted_interval",), "is required for weighted_sum_agg (seconds)"))
    if agg != AggregationType.WEIGHTED_SUM and metric.weighted_interval is not None:
        issues.append(Issue(("weighted_interval",), "applies to weighted_sum_agg only"))
    if metric.rounding_precision is not None and metric.rounding_function is None:
        issues.append(Issue(("rounding_precision",), "needs a rounding_function"))
    seen: dict[str, int] = {}
    for index, item in enumerate(metric.filters):
        if item.key in seen:
            issues.append(Issue(("filters", index, "key"), f"duplicate filter key {item.key!r} "
                                                           f"(also filters[{seen[item.key]}])"))
        seen.setdefault(item.key, index)
        issues += _duplicate_values(item.values, ("filters", index, "values"))
    return issues


def _empty(value: Any) -> bool:
    """What "absent" looks like in a Lago export: null, [], {}, "", 0 or false."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return format_decimal(value)
    return json.dumps(value) if isinstance(value, bool | int | str) else _json_type(value)


def field_issues(model: LagoModel, loc: Loc = ()) -> list[Issue]:
    """Every field of ``model`` (and of its nested parts) that is neither billed nor a
    documented no-effect field, refused by name: nothing is accepted and then ignored."""
    issues: list[Issue] = []
    kind = type(model).__name__
    for name, value in (model.model_extra or {}).items():
        if name in model.NO_EFFECT:
            continue
        if name in model.NOT_SUPPORTED:
            if not _empty(value):
                issues.append(Issue((*loc, name), f"is not supported yet "
                                                  f"({model.NOT_SUPPORTED[name]}); remove it "
                                                  f"or leave it empty"))
            continue
        issues.append(Issue((*loc, name), f"unknown field {name!r} for a {kind}: it would be "
                                          f"ignored, so it is refused (check the spelling)"))
    for name, (unsupported, what) in model.NOT_SUPPORTED_VALUES.items():
        value = getattr(model, name)
        if unsupported(value):
            issues.append(Issue((*loc, name), f"{_shown(value)} is not supported yet ({what}); "
                                              f"Tallyflow would not bill it"))
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, LagoModel):
            issues += field_issues(value, (*loc, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, LagoModel):
                    issues += field_issues(item, (*loc, name, index))
    return issues


def _duplicate_values(values: Sequence[str], loc: Loc) -> list[Issue]:
    counts = Counter(values)
    return [Issue((*loc, i), f"duplicate value {v!r}") for i, v in enumerate(values)
            if counts[v] > 1 and values.index(v) != i]


def _plan_issues(plan: Plan) -> list[Issue]:
    issues: list[Issue] = []
    for index, charge in enumerate(plan.charges):
        issues += _charge_issues(charge, ("charges", index))
    return issues


def _charge_issues(charge: Charge, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if charge.metric_code is None:
        issues.append(Issue((*loc, "billable_metric_code"),
                            "is required (or billable_metric_id naming the metric code)"))
    elif (charge.billable_metric_code and charge.billable_metric_id
          and charge.billable_metric_code != charge.billable_metric_id):
        issues.append(Issue((*loc, "billable_metric_id"),
                            f"conflicts with billable_metric_code "
                            f"{charge.billable_metric_code!r}; give only one of them"))
    if not charge.invoiceable and not charge.pay_in_advance:
        issues.append(Issue((*loc, "invoiceable"), "can be false only when pay_in_advance is true"))
    if charge.pay_in_advance and charge.charge_model == "volume":
        issues.append(Issue((*loc, "pay_in_advance"), "is not available for volume charges"))
    issues += _property_issues(charge.charge_model, charge.properties, (*loc, "properties"))
    seen: dict[str, int] = {}
    for index, item in enumerate(charge.filters):
        floc = (*loc, "filters", index)
        issues += _charge_filter_issues(charge.charge_model, item, floc)
        signature = dumps({k: sorted(v) for k, v in item.values.items()})
        if signature in seen:
            issues.append(Issue((*floc, "values"),
                                f"same values as filters[{seen[signature]}]"))
        seen.setdefault(signature, index)
    return issues


def _charge_filter_issues(charge_model: str, item: ChargeFilterPayload, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if not item.values:
        issues.append(Issue((*loc, "values"), "needs at least one key"))
    for key, values in item.values.items():
        if not values:
            issues.append(Issue((*loc, "values", key), "needs at least one value"))
        issues += _duplicate_values(values, (*loc, "values", key))
    issues += _property_issues(charge_model, item.properties, (*loc, "properties"))
    return issues


def _subscription_issues(subscription: Subscription) -> list[Issue]:
    start, end = subscription.subscription_at, subscription.ending_at
    if start is not None and end is not None and end <= start:
        return [Issue(("ending_at",), f"must be after subscription_at ({format_datetime(start)})")]
    return []


def _wallet_issues(wallet: Wallet) -> list[Issue]:
    issues: list[Issue] = []
    for index, rule in enumerate(wallet.recurring_transaction_rules):
        issues += _rule_issues(rule, ("recurring_transaction_rules", index))
    return issues


def _rule_issues(rule: RecurringRule, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if rule.trigger == "interval" and rule.interval is None:
        issues.append(Issue((*loc, "interval"), "is required when trigger is interval"))
    if rule.trigger == "threshold" and rule.threshold_credits is None:
        issues.append(Issue((*loc, "threshold_credits"), "is required when trigger is threshold"))
    if rule.method == "target" and rule.target_ongoing_balance is None:
        issues.append(Issue((*loc, "target_ongoing_balance"), "is required when method is target"))
    if rule.started_at and rule.expiration_at and rule.expiration_at <= rule.started_at:
        issues.append(Issue((*loc, "expiration_at"), "must be after started_at"))
    return issues


_DOCUMENT_CHECKS: dict[str, Callable[[Any], list[Issue]]] = {
    TAX: lambda tax: [],
    BILLING_ENTITY: lambda entity: [],
    BILLABLE_METRIC: _metric_issues,
    PLAN: _plan_issues,
    CUSTOMER: lambda customer: [],
    SUBSCRIPTION: _subscription_issues,
    WALLET: _wallet_issues,
}


def envelope_kind(envelope: Any) -> str:
    """The kind of a Lago envelope (its one key), or ValueError saying what was expected."""
    expected = ", ".join(f'{{"{k}": {{...}}}}' for k in KINDS)
    if not isinstance(envelope, Mapping):
        raise ValueError(f"expected a Lago envelope such as {expected}; got a "
                         f"JSON {_json_type(envelope)}")
    keys = list(envelope)
    if len(keys) != 1 or keys[0] not in MODELS:
        raise ValueError(f"expected exactly one envelope key, one of: {', '.join(KINDS)}; "
                         f"got {', '.join(map(str, keys)) or 'an empty object'}")
    return str(keys[0])


def parse_body(kind: str, body: Any) -> tuple[LagoModel | None, list[Issue]]:
    """One envelope body -> its model, or every issue found in it (paths relative to the kind).

    Field-level problems come from pydantic (all of them at once); rules spanning several fields
    run only once the fields themselves are valid.
    """
    if not isinstance(body, Mapping):
        return None, [Issue((kind,), f"must be an object; got a JSON {_json_type(body)}")]
    try:
        model = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        issues = [Issue((kind, *err["loc"]), _pydantic_message(err))
                  for err in exc.errors(include_url=False)]
        return None, issues + [Issue((kind, *i.loc), i.message) for i in _part_issues(kind, body)]
    if isinstance(model, Wallet) and model.code is None:
        model.code = wallet_code(model.name)
    issues = [Issue((kind, *i.loc), i.message)
              for i in [*field_issues(model), *_DOCUMENT_CHECKS[kind](model)]]
    return (None if issues else model), issues


def _part_issues(kind: str, body: Mapping[str, Any]) -> list[Issue]:
    """Rules of the parts (charges, wallet rules) that are valid on their own, for a document
    that failed field validation elsewhere: so that one apply still reports every problem."""
    parts: dict[str, tuple[str, type[LagoModel], Callable[[Any, Loc], list[Issue]]]] = {
        PLAN: ("charges", Charge, _charge_issues),
        WALLET: ("recurring_transaction_rules", RecurringRule, _rule_issues),
    }
    if kind not in parts or not isinstance(body.get(parts[kind][0]), list):
        return []
    name, model, check = parts[kind]
    issues: list[Issue] = []
    for index, item in enumerate(body[name]):
        try:
            part = model.model_validate(item)
        except ValidationError:
            continue  # its field errors are already in the document's errors
        issues += check(part, (name, index))
    return issues


def _pydantic_message(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "timezone_aware":
        return "needs a timezone offset (e.g. 2024-01-01T00:00:00Z)"
    return str(error["msg"]).removeprefix("Value error, ")


# --------------------------------------------------------------------------------------------
# Cross-references: the catalog as it will be after the apply
# --------------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """Objects by kind and natural key; used for the database state and for the effective
    catalog (database overlaid with the files being applied)."""

    objects: dict[str, dict[tuple[str, ...], LagoModel]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    # Keys of documents of this apply that failed validation: already reported, so a reference
    # to them is not an "unknown" error as well.
    broken: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)

    def get(self, kind: str, *key: str) -> Any:
        return self.objects[kind].get(tuple(key))

    def missing(self, kind: str, *key: str) -> bool:
        """True when nothing of that key exists, not even a document that failed validation."""
        return tuple(key) not in self.objects[kind] and (kind, tuple(key)) not in self.broken

    def put(self, kind: str, model: LagoModel) -> None:
        self.objects[kind][natural_key(kind, model)] = model

    def overlay(self, documents: Iterable[ValidDocument]) -> Catalog:
        merged = Catalog({kind: dict(items) for kind, items in self.objects.items()})
        for document in documents:
            merged.objects[document.kind][document.key] = document.model
        return merged


def reference_issues(kind: str, model: LagoModel, catalog: Catalog) -> list[Issue]:
    """Problems of one object against the rest of the (effective) catalog."""
    if isinstance(model, Plan):
        return _plan_references(model, catalog)
    if isinstance(model, Customer):
        issues = _tax_references(model.tax_codes, (CUSTOMER, "tax_codes"), catalog)
        code = model.billing_entity_code
        if code is not None and catalog.missing(BILLING_ENTITY, code):
            issues.append(Issue((CUSTOMER, "billing_entity_code"),
                                f"unknown billing entity {code!r}"))
        return issues
    if isinstance(model, BillingEntity):
        issues = _tax_references(model.tax_codes, (BILLING_ENTITY, "tax_codes"), catalog)
        others = [e.code for e in catalog.objects[BILLING_ENTITY].values()
                  if isinstance(e, BillingEntity) and e.is_default and e.code != model.code]
        if model.is_default and others:
            issues.append(Issue((BILLING_ENTITY, "is_default"),
                                f"billing entity {others[0]!r} is already the default"))
        return issues
    if isinstance(model, Subscription):
        return _subscription_references(model, catalog)
    if isinstance(model, Wallet):
        return _wallet_references(model, catalog)
    return []


def _tax_references(codes: Sequence[str], loc: Loc, catalog: Catalog) -> list[Issue]:
    return [Issue((*loc, i), f"unknown tax {code!r} (define it as a {{\"tax\": {{...}}}} object)")
            for i, code in enumerate(codes) if catalog.missing(TAX, code)]


def _plan_references(plan: Plan, catalog: Catalog) -> list[Issue]:
    issues: list[Issue] = _tax_references(plan.tax_codes, (PLAN, "tax_codes"), catalog)
    for index, charge in enumerate(plan.charges):
        loc: Loc = (PLAN, "charges", index)
        issues += _tax_references(charge.tax_codes, (*loc, "tax_codes"), catalog)
        if charge.metric_code is None:
            continue
        metric: BillableMetric | None = catalog.get(BILLABLE_METRIC, charge.metric_code)
        ref = "billable_metric_code" if charge.billable_metric_code else "billable_metric_id"
        if metric is None:
            if catalog.missing(BILLABLE_METRIC, charge.metric_code):
                issues.append(Issue((*loc, ref),
                                    f"unknown billable metric {charge.metric_code!r}"))
            continue
        issues += _charge_references(charge, metric, loc)
    return issues


def _charge_references(charge: Charge, metric: BillableMetric, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    agg = metric.aggregation_type
    if charge.charge_model == ChargeModel.DYNAMIC and agg != AggregationType.SUM:
        issues.append(Issue((*loc, "charge_model"),
                            f"dynamic needs a sum_agg metric; {metric.code!r} is {agg}"))
    if charge.pay_in_advance and agg in NOT_PAY_IN_ADVANCE:
        issues.append(Issue((*loc, "pay_in_advance"),
                            f"is not available for {agg} metrics ({metric.code!r})"))
    allowed = {f.key: f.values for f in metric.filters}
    for index, item in enumerate(charge.filters):
        for key, values in item.values.items():
            vloc = (*loc, "filters", index, "values", key)
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                issues.append(Issue(vloc, f"{key!r} is not a filter of billable metric "
                                          f"{metric.code!r} (its filters: {known})"))
                continue
            for position, value in enumerate(values):
                if value != ALL_FILTER_VALUES and value not in allowed[key]:
                    issues.append(Issue((*vloc, position),
                                        f"{value!r} is not a value of filter {key!r} of "
                                        f"billable metric {metric.code!r} (allowed: "
                                        f"{', '.join(allowed[key])})"))
    return issues


def _subscription_references(subscription: Subscription, catalog: Catalog) -> list[Issue]:
    issues: list[Issue] = []
    customer: Customer | None = catalog.get(CUSTOMER, subscription.external_customer_id)
    plan: Plan | None = catalog.get(PLAN, subscription.plan_code)
    if catalog.missing(CUSTOMER, subscription.external_customer_id):
        issues.append(Issue((SUBSCRIPTION, "external_customer_id"),
                            f"unknown customer {subscription.external_customer_id!r}"))
    if catalog.missing(PLAN, subscription.plan_code):
        issues.append(Issue((SUBSCRIPTION, "plan_code"),
                            f"unknown plan {subscription.plan_code!r}"))
    if customer and plan and customer.currency and customer.currency != plan.amount_currency:
        issues.append(Issue((SUBSCRIPTION, "plan_code"),
                            f"plan {plan.code!r} bills in {plan.amount_currency} but customer "
                            f"{customer.external_id!r} uses {customer.currency}"))
    return issues


def _wallet_references(wallet: Wallet, catalog: Catalog) -> list[Issue]:
    customer: Customer | None = catalog.get(CUSTOMER, wallet.external_customer_id)
    if customer is None:
        if not catalog.missing(CUSTOMER, wallet.external_customer_id):
            return []
        return [Issue((WALLET, "external_customer_id"),
                      f"unknown customer {wallet.external_customer_id!r}")]
    if customer.currency and customer.currency != wallet.currency:
        return [Issue((WALLET, "currency"),
                      f"{wallet.currency} differs from the currency of customer "
                      f"{customer.external_id!r} ({customer.currency})")]
    return []


def _change_issues(kind: str, model: LagoModel, previous: LagoModel | None) -> list[Issue]:
    """Changes Lago does not allow on an existing object (they would rewrite history)."""
    if isinstance(model, Subscription) and isinstance(previous, Subscription):
        if model.external_customer_id != previous.external_customer_id:
            return [Issue((kind, "external_customer_id"),
                          f"subscription {model.external_id!r} belongs to customer "
                          f"{previous.external_customer_id!r}; it cannot move to another")]
    if isinstance(model, Wallet) and isinstance(previous, Wallet):
        if model.currency != previous.currency:
            return [Issue((kind, "currency"),
                          f"an existing wallet's currency cannot change "
                          f"({previous.currency} -> {model.currency})")]
    return []


# --------------------------------------------------------------------------------------------
# Whole apply
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidDocument:
    """A document ready to write: its model, normalised body and digest."""

    file: str
    index: int
    kind: str
    key: tuple[str, ...]
    model: Any
    document: dict[str, Any]
    digest: str

    def envelope(self) -> dict[str, Any]:
        return {self.kind: self.document}


@dataclass
class Validation:
    documents: list[ValidDocument]
    errors: list[CatalogError]

    @property
    def ok(self) -> bool:
        return not self.errors


DATABASE = "(database)"


def validate_documents(
    documents: Sequence[tuple[str, int, Any]],
    existing: Catalog | None = None,
    *,
    now: datetime | None = None,
) -> Validation:
    """Validate a whole apply: every document alone, duplicates, changes and references.

    ``documents`` are ``(file, index, envelope)`` as ``tasks.catalog.load_documents`` returns
    them; ``existing`` is what the database holds. ``now`` is the default subscription_at for
    new subscriptions; an existing subscription keeps its stored start when the file omits it,
    so re-applying the same file never moves it.
    """
    existing = existing or Catalog()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    per_file = Counter(file for file, _, _ in documents)
    errors: list[CatalogError] = []
    valid: list[ValidDocument] = []
    first_seen: dict[tuple[str, tuple[str, ...]], str] = {}
    broken: set[tuple[str, tuple[str, ...]]] = set()
    for file, index, envelope in documents:
        prefix: Loc = (index,) if per_file[file] > 1 else ()

        def report(issues: Iterable[Issue], file: str = file, prefix: Loc = prefix) -> None:
            errors.extend(CatalogError(file, format_path((*prefix, *i.loc)), i.message)
                          for i in issues)

        try:
            kind = envelope_kind(envelope)
        except ValueError as exc:
            report([Issue((), str(exc))])
            continue
        model, issues = parse_body(kind, envelope[kind])
        if model is None:
            broken.update(_raw_keys(kind, envelope[kind]))
            report(issues)
            continue
        key = natural_key(kind, model)
        label = file + (f"[{index}]" if prefix else "")
        first = first_seen.setdefault((kind, key), label)
        if first != label:
            issues.append(Issue((kind, _key_field(kind)), f"duplicate {describe_key(kind, key)} "
                                                          f"in this apply (first in {first})"))
        previous = existing.get(kind, *key)
        _resolve_defaults(model, previous, now)
        issues += _change_issues(kind, model, previous)
        issues += [Issue((kind, *i.loc), i.message) for i in _DOCUMENT_CHECKS[kind](model)]
        report(issues)
        if not issues:
            document = normalise(model)
            valid.append(ValidDocument(file, index, kind, key, model, document,
                                       digest(document)))
    errors += _all_reference_errors(valid, existing, per_file, broken)
    return Validation(valid if not errors else [], errors)


def _raw_keys(kind: str, body: Any) -> set[tuple[str, tuple[str, ...]]]:
    """The key of a document that failed to parse, when it can be read, so that references to
    it are not reported a second time as "unknown"."""
    if not isinstance(body, Mapping):
        return set()
    coded = (TAX, BILLING_ENTITY, BILLABLE_METRIC, PLAN)
    value = body.get("code") if kind in coded else body.get("external_id")
    return {(kind, (value,))} if isinstance(value, str) else set()


def _key_field(kind: str) -> str:
    return {TAX: "code", BILLING_ENTITY: "code", BILLABLE_METRIC: "code", PLAN: "code",
            WALLET: "code"}.get(kind, "external_id")


def _resolve_defaults(model: LagoModel, previous: LagoModel | None, now: datetime) -> None:
    if isinstance(model, Subscription) and model.subscription_at is None:
        started = previous.subscription_at if isinstance(previous, Subscription) else None
        model.subscription_at = started or now


def _all_reference_errors(
    valid: Sequence[ValidDocument],
    existing: Catalog,
    per_file: Mapping[str, int],
    broken: set[tuple[str, tuple[str, ...]]],
) -> list[CatalogError]:
    """References of the files' documents, and of stored objects that the files change under
    them (a stored wallet whose customer changes currency, a stored plan whose metric loses a
    filter value)."""
    effective = existing.overlay(valid)
    effective.broken = existing.broken | broken
    applied = {(d.kind, d.key) for d in valid}
    errors: list[CatalogError] = []
    for document in valid:
        prefix: Loc = (document.index,) if per_file[document.file] > 1 else ()
        errors += [CatalogError(document.file, format_path((*prefix, *i.loc)), i.message)
                   for i in reference_issues(document.kind, document.model, effective)]
    if not valid:
        return errors
    for kind, objects in existing.objects.items():
        for key, model in objects.items():
            if (kind, key) in applied:
                continue
            errors += [CatalogError(f"{DATABASE} {describe_key(kind, key)}", format_path(i.loc),
                                    i.message)
                       for i in reference_issues(kind, model, effective)]
    return errors


def validate_envelopes(envelopes: Sequence[Any], file: str = "<input>") -> list[CatalogError]:
    """Convenience for callers without files or a database: every error of these envelopes."""
    return validate_documents([(file, i, e) for i, e in enumerate(envelopes)]).errors
