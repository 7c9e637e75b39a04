"""The Lago envelope bodies as pydantic models, one per kind.

Also their natural keys, their normal form, and ``ValidDocument`` (a document ready to write).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from tallyflow.models.catalog.fields import (
    ADD_ON,
    AGGREGATION_TYPES,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    BILLING_TIMES,
    CHARGE_MODELS,
    COUPON,
    COUPON_EXPIRATIONS,
    COUPON_FREQUENCIES,
    COUPON_TYPES,
    CUSTOMER,
    GROUP_KEY_PROPERTIES,
    INTERVALS,
    PLAN,
    REGROUP_PAID_FEES,
    ROUNDING_FUNCTIONS,
    RULE_METHODS,
    RULE_TRIGGERS,
    SUBSCRIPTION,
    TAX,
    WALLET,
    WEIGHTED_INTERVALS,
    Cents,
    Credits,
    Currency,
    Email,
    Integer,
    Moment,
    PositivePrice,
    Quantity,
    Text,
    Timezone,
    _empty_when_null,
    _not_negative,
    _one_of,
    _priority,
)
from tallyflow.models.credit_notes import TERMINATION_CHOICES
from tallyflow.models.lifecycle import ON_TERMINATION_INVOICE


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
    type is ``tallyflow.models.rating.filters.MetricFilter``."""

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
    ``tallyflow.models.rating.filters.ChargeFilter`` (built by ``charge_filter_from_values``)."""

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
    # Lago: null, or "invoice" (fees kept off invoices, paid, regrouped at period end on an
    # advance_charges invoice); only with pay_in_advance true and invoiceable false (rules.py).
    regroup_paid_fees: Annotated[
        str, _one_of("regroup_paid_fees", REGROUP_PAID_FEES)] | None = None

    NO_EFFECT = _EXPORT_FIELDS | {"lago_billable_metric_id", "taxes", "code"}
    NOT_SUPPORTED = {
        "applied_pricing_unit": "custom pricing units",
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


def _none_when_empty(value: Any) -> Any:
    # ``[]`` and ``null`` both mean "no thresholds"; kept out of the document so that older
    # documents keep their digest
    return None if value in (None, []) else value


class UsageThreshold(LagoModel):
    """A progressive-billing threshold (Lago's ``usage_thresholds`` item,
    ``app/models/usage_threshold.rb``): lifetime usage reaching ``amount_cents`` issues a
    ``progressive_billing`` invoice; a ``recurring`` one every further ``amount_cents``
    (docs/architecture.md §20)."""

    amount_cents: Cents
    recurring: bool = False
    threshold_display_name: str | None = None

    NO_EFFECT = _EXPORT_FIELDS


UsageThresholds = Annotated[list[UsageThreshold] | None, BeforeValidator(_none_when_empty)]


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
    # yearly and semiannual plans: charges billed monthly, the fee once a period (Lago's)
    bill_charges_monthly: bool | None = None
    # progressive billing (docs/architecture.md §20); None: none
    usage_thresholds: UsageThresholds = None

    NO_EFFECT = _EXPORT_FIELDS | _COUNTS | {"taxes", "parent_id", "cascade_updates",
                                            "pending_deletion"}
    NOT_SUPPORTED = {
        "bill_fixed_charges_monthly": "monthly fixed charges on a yearly plan",
        "fixed_charges": "fixed charges",
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
        # the soft delete's mark (DELETE /customers/{id}): kept through an export and apply
        "deleted_at",
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
    # A plan paid in advance: what a termination or upgrade does with the unused days
    # (tasks/corrections/credit_notes.py); None is Lago's default, "credit" (left out so that
    # older documents keep their digest; docs/credit-notes.md)
    on_termination_credit_note: Annotated[
        str, _one_of("on_termination_credit_note", TERMINATION_CHOICES)] | None = None
    # Lago's subscription override of the plan's thresholds (``UsageThresholds::
    # OverrideService``): when given, they replace the plan's for this subscription
    usage_thresholds: UsageThresholds = None

    NO_EFFECT = _EXPORT_FIELDS | {
        "lago_customer_id", "status", "started_at", "canceled_at", "terminated_at",
        "previous_plan_code", "next_plan_code", "downgrade_plan_date", "trial_ended_at",
        "current_billing_period_started_at", "current_billing_period_ending_at",
    }
    NOT_SUPPORTED = {
        "plan_overrides": "per-subscription plan overrides",
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


class AddOn(LagoModel):
    """Lago's add-on (``AddOn``): a named item with a default unit price, billed on one-off
    invoices (``POST /invoices``, docs/invoices.md "One-off invoices"). Its ``tax_codes``
    apply to its fees unless a fee names its own (Lago's ``Fees::ApplyTaxesService``)."""

    code: Text
    name: Text
    invoice_display_name: str | None = None
    description: str | None = None
    # Lago: ``validates :amount_cents, numericality: {greater_than: 0}`` (rules.py)
    amount_cents: Cents
    amount_currency: Currency
    tax_codes: TaxCodes = []

    NO_EFFECT = _EXPORT_FIELDS | {"taxes", "deleted_at"}
class CouponLimitation(LagoModel):
    """A coupon's ``applies_to``: the plans, or the billable metrics, it is limited to."""

    plan_codes: Annotated[list[Text], _empty_when_null(list)] = []
    billable_metric_codes: Annotated[list[Text], _empty_when_null(list)] = []

    NOT_SUPPORTED = {"plan_ids": "plans named by Lago id (name them by plan_codes)",
                     "billable_metric_ids": "metrics named by Lago id (name them by"
                                            " billable_metric_codes)"}


class Coupon(LagoModel):
    """Lago's coupon (``Coupons::CreateService``): a fixed amount or a percentage off
    invoices, once, for ``frequency_duration`` invoices or forever (models/coupons.py)."""

    code: Text
    name: Text
    description: str | None = None
    coupon_type: Annotated[str, _one_of("coupon_type", COUPON_TYPES)]
    amount_cents: Cents | None = None
    amount_currency: Currency | None = None
    percentage_rate: Quantity | None = None
    frequency: Annotated[str, _one_of("frequency", COUPON_FREQUENCIES)] = "once"
    frequency_duration: Integer | None = None
    reusable: bool = True
    expiration: Annotated[str, _one_of("expiration", COUPON_EXPIRATIONS)]
    expiration_at: Moment | None = None
    applies_to: CouponLimitation | None = None

    # limited_*: what applies_to says; terminated_at: the coupon's state, not its document
    NO_EFFECT = _EXPORT_FIELDS | {"limited_plans", "limited_billable_metrics",
                                  "terminated_at"}
    NOT_SUPPORTED = {"plan_codes": "limits outside applies_to (give applies_to.plan_codes)",
                     "billable_metric_codes": "limits outside applies_to (give"
                                              " applies_to.billable_metric_codes)"}

    @property
    def limited_plan_codes(self) -> list[str]:
        return list(self.applies_to.plan_codes) if self.applies_to else []

    @property
    def limited_metric_codes(self) -> list[str]:
        return list(self.applies_to.billable_metric_codes) if self.applies_to else []


class CouponApplication(LagoModel):
    """Lago's ``applied_coupon`` request: a coupon applied to a customer, optionally with
    its own amount, rate or frequency (``AppliedCoupons::CreateService``)."""

    external_customer_id: Text
    coupon_code: Text
    amount_cents: Cents | None = None
    amount_currency: Currency | None = None
    percentage_rate: Quantity | None = None
    frequency: Annotated[str, _one_of("frequency", COUPON_FREQUENCIES)] | None = None
    frequency_duration: Integer | None = None

    # the read-only fields of Lago's applied_coupon object
    NO_EFFECT = _EXPORT_FIELDS | {"lago_coupon_id", "coupon_name", "coupon_description",
                                  "coupon_status", "coupon_deleted_at", "lago_customer_id",
                                  "status", "expiration_at", "terminated_at", "credits"}
    NOT_SUPPORTED = {
        "amount_cents_remaining": "carrying over a partly used coupon",
        "frequency_duration_remaining": "carrying over a partly used coupon",
    }


MODELS: dict[str, type[LagoModel]] = {
    TAX: Tax,
    BILLING_ENTITY: BillingEntity,
    BILLABLE_METRIC: BillableMetric,
    PLAN: Plan,
    CUSTOMER: Customer,
    SUBSCRIPTION: Subscription,
    WALLET: Wallet,
    ADD_ON: AddOn,
    COUPON: Coupon,
    APPLIED_COUPON: CouponApplication,
}


def wallet_code(name: str | None) -> str:
    """A wallet's natural key within its customer when no code is given: a slug of its name."""
    slug = re.sub(r"[^a-z0-9]+", "_", (name or "").lower()).strip("_")
    return slug or "default"


def natural_key(kind: str, model: LagoModel) -> tuple[str, ...]:
    """The key an object is upserted by (what Lago users already use to refer to it)."""
    if isinstance(model, Tax | BillingEntity | BillableMetric | Plan | AddOn | Coupon):
        return (model.code,)
    if isinstance(model, Customer | Subscription):
        return (model.external_id,)
    if isinstance(model, Wallet):
        return (model.external_customer_id, model.code or wallet_code(model.name))
    if isinstance(model, CouponApplication):
        return (model.external_customer_id, model.coupon_code)
    raise ValueError(f"unknown catalog kind {kind!r}")


def describe_key(kind: str, key: tuple[str, ...]) -> str:
    return f"{kind} {'/'.join(key)!r}"


def normalise(model: LagoModel) -> dict[str, Any]:
    """The document stored and exported: defaults filled in, nulls dropped, extras kept.

    Filling defaults makes ``{"recurring": false}`` and an omitted ``recurring`` the same
    document (same digest), so only a real change counts as an update.
    """
    return model.model_dump(mode="python", exclude_none=True)


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
