"""Each Lago request field of the operations the API serves: carried out, or refused by name.

The decision list docs/api.md's "Request fields" table is generated from (with the pinned
Lago document's fields; ``tests/tallyflow/api/test_request_fields.py`` keeps the two equal).
A field is *carried out* when the code that reads the body takes it (a catalog document's
field of ``tallyflow apply``'s models, a field of the route's own list), *kept* when a catalog
model keeps it as sent and it changes no amount (the models' ``NO_EFFECT``: contact details,
integration ids); every other Lago field is *refused by name*: 422 with ``unknown_field`` or
``not_supported`` (a ``null`` or empty value of a field Tallyflow does not carry is the field
unset, ``documents.unset_nulls``).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from tallyflow.api.schemas import (
    TOP_UP_SUPPORTED,
    CreditNote,
    CreditNoteEstimate,
    LagoEvent,
    VoidInvoiceRequest,
    WebhookEndpoint,
)
from tallyflow.models.catalog import MODELS
from tallyflow.models.invoicing.one_off import INVOICE_FIELDS, INVOICE_NO_EFFECT

CARRIED = "carried out"
KEPT = "kept, no effect"  # stored and answered back; changes no amount (the models' NO_EFFECT)
REFUSED = "refused by name"


def _fields(model: type[BaseModel], leave_out: Iterable[str] = ()) -> frozenset[str]:
    names = {
        name for field, info in model.model_fields.items() for name in (field, info.alias) if name
    }
    return frozenset(names - set(leave_out))


def _catalog(kind: str) -> frozenset[str]:
    return _fields(MODELS[kind])


def kept(kind: str) -> frozenset[str]:
    """A catalog kind's Lago fields that are kept as sent and change no amount."""
    return frozenset(MODELS[kind].NO_EFFECT)


_ALERT = frozenset(
    {"alert_type", "code", "name", "billable_metric_code", "direction", "thresholds"}
)
# (method, Lago's path, the body's envelope key or "" for top-level fields) -> the fields the
# code carries out
CARRIED_FIELDS: dict[tuple[str, str, str], frozenset[str]] = {
    ("post", "/billable_metrics", "billable_metric"): _catalog("billable_metric"),
    ("put", "/billable_metrics/{code}", "billable_metric"): _catalog("billable_metric"),
    ("post", "/plans", "plan"): _catalog("plan"),
    ("put", "/plans/{code}", "plan"): _catalog("plan"),
    ("post", "/customers", "customer"): _catalog("customer"),
    ("post", "/subscriptions", "subscription"): _catalog("subscription"),
    ("post", "/subscriptions", "authorization"): frozenset(),  # a payment pre-authorization
    ("put", "/subscriptions/{external_id}", "subscription"): _catalog("subscription"),
    ("post", "/taxes", "tax"): _catalog("tax"),
    ("put", "/taxes/{code}", "tax"): _catalog("tax"),
    ("post", "/wallets", "wallet"): _catalog("wallet"),
    ("put", "/wallets/{lago_id}", "wallet"): _catalog("wallet"),
    ("post", "/add_ons", "add_on"): _catalog("add_on"),
    ("put", "/add_ons/{code}", "add_on"): _catalog("add_on"),
    ("post", "/coupons", "coupon"): _catalog("coupon"),
    ("put", "/coupons/{code}", "coupon"): _catalog("coupon"),
    ("post", "/applied_coupons", "applied_coupon"): _catalog("applied_coupon"),
    ("post", "/wallet_transactions", "wallet_transaction"): frozenset(TOP_UP_SUPPORTED),
    ("post", "/invoices", "invoice"): frozenset({*INVOICE_FIELDS, *INVOICE_NO_EFFECT}),
    ("post", "/invoices/{lago_id}/void", ""): _fields(VoidInvoiceRequest),
    ("post", "/credit_notes", "credit_note"): _fields(CreditNote, ["metadata"]),
    ("post", "/credit_notes/estimate", "credit_note"): _fields(CreditNoteEstimate),
    ("post", "/events", "event"): _fields(LagoEvent),
    ("post", "/events/batch", "events"): _fields(LagoEvent),
    ("post", "/events/estimate_fees", "event"): frozenset(
        {"code", "external_subscription_id", "transaction_id", "properties"}
    ),
    ("post", "/webhook_endpoints", "webhook_endpoint"): _fields(WebhookEndpoint),
    ("put", "/webhook_endpoints/{lago_id}", "webhook_endpoint"): _fields(WebhookEndpoint),
    ("post", "/subscriptions/{external_id}/alerts", "alert"): _ALERT,
    ("put", "/subscriptions/{external_id}/alerts/{code}", "alert"): _ALERT,
    ("put", "/subscriptions/{external_id}/lifetime_usage", "lifetime_usage"): frozenset(
        {"external_historical_usage_amount_cents"}
    ),
}


def decision(method: str, path: str, envelope: str, field: str) -> str:
    """``carried out`` or ``refused by name`` for one Lago request field (a top-level key
    beside the envelope, ``envelope=""``, is refused unless listed)."""
    if field in CARRIED_FIELDS.get((method, path, envelope), ()):
        return CARRIED
    if (
        envelope in MODELS
        and path.split("/")[1] != "wallet_transactions"
        and field in kept(envelope)
    ):
        return KEPT
    return REFUSED
