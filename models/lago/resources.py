"""Lago's resource shapes as Tallyflow writes them (docs/architecture.md §11).

TypedDicts: at runtime they are the plain dicts the code already builds, so JSON, Prefect
results and stored documents keep their exact bytes; the type checker holds every key. Where
two outputs of one resource differ on the wire today, both shapes are here, derived from one
base, so the difference is written down instead of discovered.
"""

# No `from __future__ import annotations`: Python 3.11 reads NotRequired only from real
# annotations, and conformance.mismatches needs __required_keys__ right.
from typing import Any, NotRequired, TypedDict

# ------------------------------------------------------------------------ wallet transactions


class WalletTransactionBase(TypedDict):
    """What every wallet transaction output carries (Lago's ``wallet_transaction``)."""

    lago_id: str
    lago_wallet_id: str
    transaction_type: str  # inbound | outbound
    status: str  # pending | settled | failed | voided
    transaction_status: str  # purchased | granted | voided | invoiced
    source: str
    credit_amount: str
    amount_cents: int | str
    created_at: str
    settled_at: str | None


class WalletTransaction(WalletTransactionBase):
    """The HTTP API's (``GET /wallets/{id}/wallet_transactions``, top-ups): Lago's own
    fields, moments in the API's form (``times.iso_z``)."""

    lago_invoice_id: str | None
    amount: str
    priority: int

    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    lago_credit_note_id: NotRequired[None]
    lago_voided_invoice_id: NotRequired[None]
    name: NotRequired[None]
    purchase_order_number: NotRequired[None]
    failed_at: NotRequired[None]
    remaining_amount_cents: NotRequired[None]
    remaining_credit_amount: NotRequired[None]


class LedgerTransaction(WalletTransactionBase):
    """``tallyflow wallets show`` (``--json``): the ledger row as an operator reads it, with
    what the API leaves out (the subscription and period it deducts for, the idempotency key,
    granted credits), moments as ``datetime.isoformat`` writes them."""

    wallet_code: str
    granted_credits: str
    external_subscription_id: str | None
    period_start: str | None
    as_of: str
    idempotency_key: str


# ------------------------------------------------------------------------ wallets


class Wallet(TypedDict):
    """A wallet with its live balances (``tallyflow wallets show``)."""

    lago_id: str
    code: str
    name: str | None
    external_customer_id: str
    status: str
    currency: str
    rate_amount: str
    priority: int
    credits_balance: str
    balance_cents: int | str
    credits_ongoing_balance: str
    ongoing_balance_cents: int | str
    credits_ongoing_usage_balance: str
    ongoing_usage_balance_cents: int | str
    consumed_credits: str
    consumed_amount_cents: int | str
    pending_credits: str
    granted_credits_balance: str
    paid_top_up_credits: str
    granted_top_up_credits: str
    expiration_at: str | None
    terminated_at: str | None
    created_at: str


class ApiWallet(Wallet):
    """The HTTP API's wallet: the same, with Lago's ``lago_customer_id``."""

    lago_customer_id: str

    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    last_balance_sync_at: NotRequired[None]
    last_consumed_credit_at: NotRequired[None]
    metadata: NotRequired[None]
    paid_top_up_max_amount_cents: NotRequired[None]
    paid_top_up_min_amount_cents: NotRequired[None]
    purchase_order_number: NotRequired[None]


class OngoingSubscription(TypedDict):
    external_subscription_id: str
    period_start: str
    amount_cents: int | str
    deducted_cents: int | str
    currency: str
    source: str  # "running_usage" (the balance refresh's figure) or "live" (rated on the read)


class OngoingUsage(TypedDict):
    amount_cents: int | str
    deducted_cents: int | str
    undeducted_cents: int | str
    refreshed_at: str | None  # the balance refresh's last pass (None: never ran)
    subscriptions: list[OngoingSubscription]


class WalletOverview(TypedDict):
    """A customer's wallets, ongoing usage and last transactions (``wallets show --json``)."""

    external_customer_id: str
    as_of: str
    wallets: list[Wallet]
    ongoing_usage: OngoingUsage
    wallet_transactions: list[LedgerTransaction]


# ------------------------------------------------------------------------ customer usage


class UsageFigures(TypedDict):
    units: str
    events_count: int
    amount_cents: int
    precise_amount_cents: str


class FilterUsage(UsageFigures):
    invoice_display_name: str | None
    values: dict[str, list[str]] | None


class GroupUsage(UsageFigures):
    grouped_by: dict[str, str | None]
    filters: list[FilterUsage]


class UsageCharge(TypedDict):
    lago_id: str
    charge_model: str
    invoice_display_name: str


class UsageMetric(TypedDict):
    lago_id: str
    name: str
    code: str
    aggregation_type: str


class ChargeUsage(UsageFigures):
    amount_currency: str
    charge: UsageCharge
    billable_metric: UsageMetric
    filters: list[FilterUsage]
    grouped_usage: list[GroupUsage]


class UnbillableCount(TypedDict):
    """Events of one metric that bill nothing, and why (docs/data-quality.md)."""

    billable_metric_code: str
    reason: str
    count: int
    sample_transaction_ids: list[str]


class CustomerUsage(TypedDict):
    """Lago's ``customer_usage`` of one subscription's period (``tallyflow usage --json``,
    ``GET /customers/{id}/current_usage``, usage snapshots)."""

    external_subscription_id: str
    from_datetime: str
    to_datetime: str
    issuing_date: str
    currency: str
    amount_cents: int
    precise_amount_cents: str
    taxes_amount_cents: int
    total_amount_cents: int
    events_count: int
    charges_usage: list[ChargeUsage]
    # Tallyflow's extension, present only when there is something to say
    tallyflow_unbillable: NotRequired[list[UnbillableCount]]


# The HTTP API's customer usage (``GET /customers/{id}/current_usage``): the same, with
# Lago's ``total_aggregated_units`` beside every ``units`` (``with_total_units`` in
# tallyflow/api/objects.py). The CLI and the stored snapshots do not carry it, and keep not
# carrying it.


class ApiFilterUsage(FilterUsage):
    total_aggregated_units: str
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    pricing_unit_details: NotRequired[None]


class ApiGroupUsage(UsageFigures):
    grouped_by: dict[str, str | None]
    filters: list[ApiFilterUsage]
    total_aggregated_units: str


class ApiChargeUsage(UsageFigures):
    amount_currency: str
    charge: UsageCharge
    billable_metric: UsageMetric
    filters: list[ApiFilterUsage]
    grouped_usage: list[ApiGroupUsage]
    total_aggregated_units: str
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    pricing_unit_details: NotRequired[None]


class ApiCustomerUsage(TypedDict):
    external_subscription_id: str
    from_datetime: str
    to_datetime: str
    issuing_date: str
    currency: str
    amount_cents: int
    precise_amount_cents: str
    taxes_amount_cents: int
    total_amount_cents: int
    events_count: int
    charges_usage: list[ApiChargeUsage]
    tallyflow_unbillable: NotRequired[list[UnbillableCount]]
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    lago_invoice_id: NotRequired[None]


# ------------------------------------------------------------------------ invoice fees


class FeeItem(TypedDict):
    type: str
    code: str
    name: str
    invoice_display_name: str
    filter_invoice_display_name: str | None
    grouped_by: dict[str, Any]
    true_up: bool
    lago_item_id: str | None
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    description: NotRequired[None]
    filters: NotRequired[None]


class InvoiceFee(TypedDict):
    """One fee of an invoice (Lago's ``V1::FeeSerializer`` names)."""

    lago_id: str
    lago_invoice_id: str
    external_subscription_id: str | None
    event_transaction_id: str | None
    amount_cents: int
    precise_amount_cents: str
    # what coupons took of it before its taxes (models/coupons.py)
    precise_coupons_amount_cents: str
    amount_currency: str
    taxes_rate: str
    taxes_amount_cents: int
    taxes_precise_amount_cents: str
    total_amount_cents: int
    total_amount_currency: str
    units: str
    events_count: int
    pay_in_advance: bool
    invoiceable: bool
    from_date: str | None
    to_date: str | None
    applied_taxes: Any
    item: FeeItem
    # only on an add-on fee (``item.type: "add_on"``, one-off invoices): Lago's fee text and
    # unit price in minor units
    description: NotRequired[str | None]
    unit_amount_cents: NotRequired[int]
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    created_at: NotRequired[None]
    external_customer_id: NotRequired[None]
    failed_at: NotRequired[None]
    lago_charge_filter_id: NotRequired[None]
    lago_charge_id: NotRequired[None]
    lago_customer_id: NotRequired[None]
    lago_fixed_charge_id: NotRequired[None]
    lago_subscription_id: NotRequired[None]
    lago_true_up_fee_id: NotRequired[None]
    lago_true_up_parent_fee_id: NotRequired[None]
    refunded_at: NotRequired[None]
    succeeded_at: NotRequired[None]


# ------------------------------------------------------------------------ invoices


class PlanVersionRef(TypedDict):
    """Tallyflow's: the plan version a period was priced with (docs/architecture.md §6)."""

    lago_id: str
    version: int
    effective_from: str | None


class InvoiceSubscription(TypedDict):
    lago_id: str
    external_id: str
    name: str | None
    plan_code: str
    billing_time: str
    status: str
    subscription_at: str | None
    started_at: str | None
    current_billing_period_started_at: str | None
    current_billing_period_ending_at: str | None
    plan_version: PlanVersionRef | None
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    activated_at: NotRequired[None]
    canceled_at: NotRequired[None]
    cancellation_reason: NotRequired[None]
    downgrade_plan_date: NotRequired[None]
    ending_at: NotRequired[None]
    next_plan_code: NotRequired[None]
    on_termination_credit_note: NotRequired[None]
    previous_plan_code: NotRequired[None]
    purchase_order_number: NotRequired[None]
    terminated_at: NotRequired[None]
    trial_ended_at: NotRequired[None]


class CreditItem(TypedDict):
    lago_item_id: str
    type: str
    code: str
    name: str
    description: str | None


class CreditInvoice(TypedDict):
    lago_id: str
    payment_status: str


class Credit(TypedDict):
    """A credit on an invoice (Lago's ``V1::CreditSerializer``): a coupon's, before taxes."""

    lago_id: str
    amount_cents: int
    amount_currency: str
    before_taxes: bool
    item: CreditItem
    invoice: CreditInvoice


class AppliedCoupon(TypedDict):
    """A coupon applied to a customer (Lago's ``V1::AppliedCouponSerializer``)."""

    lago_id: str
    lago_coupon_id: str
    coupon_code: str
    coupon_name: str
    coupon_description: str | None
    coupon_status: str
    coupon_deleted_at: None
    lago_customer_id: str
    external_customer_id: str
    status: str
    amount_cents: int | None
    amount_cents_remaining: int | None
    amount_currency: str | None
    percentage_rate: str | None
    frequency: str
    frequency_duration: int | None
    frequency_duration_remaining: int | None
    expiration_at: str | None
    created_at: str
    terminated_at: str | None


class Invoice(TypedDict):
    """Lago's invoice (``V1::InvoiceSerializer`` names): ``tallyflow invoices list/show``,
    the kept HTML's data and ``GET /invoices``. The API writes a draft's ``number`` as ``""``
    (Lago's) where the CLI writes null, and adds the customer's ``lago_id``, ``created_at``,
    ``updated_at`` and ``applicable_timezone`` (tallyflow/api/objects.py)."""

    lago_id: str
    billing_entity_code: str | None
    billing_entity: dict[str, Any] | None
    sequential_id: int | None
    number: str | None
    issuing_date: str
    payment_dispute_lost_at: None
    payment_due_date: str
    payment_overdue: bool
    net_payment_term: int
    invoice_type: str
    status: str
    payment_status: str
    currency: str
    fees_amount_cents: int
    taxes_amount_cents: int
    progressive_billing_credit_amount_cents: int
    coupons_amount_cents: int
    credit_notes_amount_cents: int
    sub_total_excluding_taxes_amount_cents: int
    sub_total_including_taxes_amount_cents: int
    prepaid_credit_amount_cents: int
    # the granted and purchased parts of it, each null unless positive (Lago's)
    prepaid_granted_credit_amount_cents: int | None
    prepaid_purchased_credit_amount_cents: int | None
    total_amount_cents: int
    total_due_amount_cents: int
    version_number: int
    created_at: str | None
    updated_at: str | None
    finalized_at: str | None
    # set when the invoice is voided (Lago's ``voided_at``; docs/architecture.md §13)
    voided_at: str | None
    file_url: None
    customer: dict[str, Any]
    subscriptions: list[InvoiceSubscription]
    applied_taxes: Any
    fees: list[InvoiceFee]
    credits: list[Credit]
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    web_url: NotRequired[None]


# ------------------------------------------------------------------------ credit notes


class CreditNoteItem(TypedDict):
    """Lago's ``V1::CreditNoteItemSerializer``: the fee credited and by how much."""

    lago_id: str
    amount_cents: int
    precise_amount_cents: str
    amount_currency: str
    fee: InvoiceFee


class CreditNoteAppliedTax(TypedDict):
    """Lago's ``V1::CreditNotes::AppliedTaxSerializer`` (the estimate leaves out the ids)."""

    lago_credit_note_id: NotRequired[str]  # absent in an estimate
    tax_name: str
    tax_code: str
    tax_rate: str
    tax_description: None
    base_amount_cents: int
    amount_cents: int
    amount_currency: str
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    lago_tax_id: NotRequired[None]


class CreditNote(TypedDict):
    """Lago's ``V1::CreditNoteSerializer`` with its items and applied taxes; rates and precise
    amounts as decimal strings (docs/architecture.md §7)."""

    lago_id: str
    billing_entity_code: str | None
    sequential_id: int
    number: str
    lago_invoice_id: str
    invoice_number: str
    issuing_date: str
    credit_status: str
    refund_status: str | None
    reason: str
    description: str | None
    currency: str
    total_amount_cents: int
    precise_total_amount_cents: str
    taxes_amount_cents: int
    precise_taxes_amount_cents: str
    sub_total_excluding_taxes_amount_cents: int
    balance_amount_cents: int
    credit_amount_cents: int
    refund_amount_cents: int
    offset_amount_cents: int
    coupons_adjustment_amount_cents: int
    taxes_rate: str
    created_at: str
    updated_at: str
    file_url: None
    xml_url: None
    self_billed: bool
    # Tallyflow's: the part of the refund that went back to the wallets (docs/credit-notes.md)
    wallet_refund_amount_cents: int
    voided_at: str | None
    items: list[CreditNoteItem]
    applied_taxes: list[CreditNoteAppliedTax]
    # Lago's keys the API answers as null (filled from Lago's schema, tallyflow/api/openapi.py)
    error_details: NotRequired[None]
    metadata: NotRequired[None]


class EstimateItem(TypedDict):
    lago_fee_id: str
    amount_cents: int


class CreditNoteEstimate(TypedDict):
    """Lago's ``V1::CreditNotes::EstimateSerializer``."""

    lago_invoice_id: str
    invoice_number: str
    currency: str
    taxes_amount_cents: int
    precise_taxes_amount_cents: str
    sub_total_excluding_taxes_amount_cents: int
    max_creditable_amount_cents: int
    max_refundable_amount_cents: int
    max_offsettable_amount_cents: int
    coupons_adjustment_amount_cents: int
    precise_coupons_adjustment_amount_cents: str
    taxes_rate: str
    items: list[EstimateItem]
    applied_taxes: list[CreditNoteAppliedTax]


# ------------------------------------------------------------------------------- webhooks


class WebhookEndpoint(TypedDict):
    """Lago's ``V1::WebhookEndpointSerializer``: the API's ``/webhook_endpoints`` and
    ``tallyflow webhooks endpoints``."""

    lago_id: str
    lago_organization_id: str
    webhook_url: str
    signature_algo: str
    name: str | None
    event_types: list[str] | None  # None: every type
    created_at: str


class WebhookDelivery(TypedDict):
    """One webhook and its delivery state (``tallyflow webhooks deliveries``); Tallyflow's own:
    Lago's API lists no deliveries."""

    lago_id: str
    webhook_type: str
    object_type: str
    object_id: str | None
    status: str  # pending | retrying | succeeded | failed
    attempts: int
    http_status: int | None
    last_error: str | None
    endpoint: str  # the endpoint's webhook_url
    lago_webhook_endpoint_id: str
    created_at: str
    last_attempt_at: str | None
    next_attempt_at: str | None  # only while it waits (pending, retrying)
    delivered_at: str | None


class WebhookAttempt(TypedDict):
    """One attempt to deliver a webhook (``tallyflow webhooks deliveries --show``)."""

    attempt: int
    started_at: str
    milliseconds: int
    http_status: int | None
    error: str | None
    response: str | None


# --------------------------------------------------------------------------- usage alerts


class AlertThreshold(TypedDict):
    code: str | None
    value: str
    recurring: bool


class AlertMetric(TypedDict):
    lago_id: str
    code: str
    name: str
    # Lago's spec names these nullable; the API fills them with null (tallyflow/api/openapi.py)
    description: NotRequired[str | None]
    field_name: NotRequired[str | None]
    rounding_function: NotRequired[None]
    rounding_precision: NotRequired[None]
    weighted_interval: NotRequired[None]


class UsageAlert(TypedDict):
    """Lago's alert (``V1::UsageMonitoring::AlertSerializer``): the API's
    ``/subscriptions/{id}/alerts``."""

    lago_id: str
    lago_organization_id: str | None  # the signing organization, once webhooks have one
    subscription_external_id: str
    external_subscription_id: str
    lago_wallet_id: None
    wallet_code: None
    alert_type: str
    code: str
    name: str | None
    direction: str
    previous_value: str
    last_processed_at: str | None
    thresholds: list[AlertThreshold]
    created_at: str
    billable_metric: AlertMetric | None


class TriggeredAlert(TypedDict):
    """Lago's triggered alert (``V1::UsageMonitoring::TriggeredAlertSerializer``): the
    object of the ``alert.triggered`` webhook."""

    lago_id: str
    lago_organization_id: str | None
    lago_alert_id: str
    lago_subscription_id: str
    external_subscription_id: str
    lago_wallet_id: None
    external_customer_id: str
    billable_metric_code: str | None
    alert_name: str | None
    alert_code: str
    alert_type: str
    current_value: str
    previous_value: str
    crossed_thresholds: list[AlertThreshold]
    triggered_at: str
    subscription_external_id: str
    customer_external_id: str
