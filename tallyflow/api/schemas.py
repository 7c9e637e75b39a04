"""Request bodies, as pydantic models with Lago's field names.

They are the bodies' one description: the OpenAPI document shows them (``request_body``), and
the checks take their field names from them (``tallyflow.api.events``, the void and top-up
checks). They do not parse the bodies: FastAPI's parser reads JSON numbers as floats, and
Lago's numbers (a ``precise_total_amount_cents``, a property of 10^24 tokens, credits) must
stay exact (docs/architecture.md §7). A body is read by ``lago.read_json`` (exact numbers,
413 past its size) and checked field by field, so every fault is answered in Lago's shape:
422 ``validation_errors`` with ``{field: [code]}``, 400 for a body that is not JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LagoEvent(_Body):
    """Lago's event. The field order is the stored record's key order."""

    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp: int | float | str | None = None
    properties: dict[str, Any] | None = None
    precise_total_amount_cents: str | int | float | None = None
    # checked against the subscription's customer, never taken on trust (not stored)
    external_customer_id: str | None = None


class EventRequest(_Body):
    event: LagoEvent


class BatchRequest(_Body):
    events: list[LagoEvent] = Field(min_length=1, max_length=100)


class WalletTransaction(_Body):
    """Lago's top-up. The fields after ``granted_credits`` are Lago's and not carried out by
    Tallyflow: refused when they hold a value."""

    wallet_id: str
    paid_credits: str | None = None
    granted_credits: str | None = None
    voided_credits: str | None = None
    invoice_requires_successful_payment: bool | None = None
    metadata: list[dict[str, Any]] | None = None
    name: str | None = None
    ignore_paid_top_up_limits: bool | None = None
    purchase_order_number: str | None = None
    payment_method: dict[str, Any] | None = None
    invoice_custom_section: dict[str, Any] | None = None


TOP_UP_SUPPORTED = ("wallet_id", "paid_credits", "granted_credits")
TOP_UP_UNSUPPORTED = tuple(name for name in WalletTransaction.model_fields
                           if name not in TOP_UP_SUPPORTED)


class WalletTransactionRequest(_Body):
    wallet_transaction: WalletTransaction


class OneOffFee(_Body):
    """A fee of a one-off invoice (Lago's ``fees[]`` of ``POST /invoices``)."""

    add_on_code: str
    invoice_display_name: str | None = None
    unit_amount_cents: int | str | None = None
    units: str | int | float | None = None
    description: str | None = None
    from_datetime: str | None = None
    to_datetime: str | None = None
    tax_codes: list[str] | None = None


class OneOffInvoice(_Body):
    """Lago's one-off invoice. The fields after ``skip_psp`` are Lago's and not carried out by
    Tallyflow: refused when they hold a value (models/invoicing/one_off.py)."""

    external_customer_id: str
    currency: str | None = None
    fees: list[OneOffFee] = Field(min_length=1)
    skip_psp: bool | None = None
    billing_entity_code: str | None = None
    purchase_order_number: str | None = None
    invoice_custom_section: dict[str, Any] | None = None
    payment_method: dict[str, Any] | None = None


class OneOffInvoiceRequest(_Body):
    invoice: OneOffInvoice


class VoidRequest(_Body):
    """Tallyflow's void (not Lago's): one subscription's events, by one or several ids."""

    external_subscription_id: str
    transaction_id: str | None = None
    transaction_ids: list[str] | None = Field(None, max_length=100)
    reason: str


class VoidInvoiceRequest(_Body):
    """Lago's void parameters. Tallyflow issues no credit note on void: ``generate_credit_note``
    true, or an amount, is refused by name (docs/architecture.md §13)."""

    generate_credit_note: bool | None = None
    refund_amount: int | None = None
    credit_amount: int | None = None
class CreditNoteItem(_Body):
    """One fee credited: Lago's ``fee_id`` is the fee's ``lago_id``."""

    fee_id: str
    amount_cents: int | str


class CreditNote(_Body):
    """Lago's credit note request. ``metadata`` is Lago's and not carried out by Tallyflow:
    refused when it holds a value."""

    invoice_id: str
    reason: str | None = None
    description: str | None = None
    credit_amount_cents: int | None = None
    refund_amount_cents: int | None = None
    offset_amount_cents: int | None = None
    items: list[CreditNoteItem]
    metadata: dict[str, Any] | None = None


class CreditNoteRequest(_Body):
    credit_note: CreditNote


class CreditNoteEstimate(_Body):
    invoice_id: str
    items: list[CreditNoteItem]


class CreditNoteEstimateRequest(_Body):
    credit_note: CreditNoteEstimate


def document_request(kind: str) -> type[BaseModel]:
    """``{kind: {...}}``: a Lago catalog document (its fields are checked by ``tallyflow
    apply``'s rules, models/catalog)."""
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{kind.title().replace('_', '')}Request",
        __config__=ConfigDict(extra="forbid"),
        **{kind: (dict[str, Any], ...)},
    )
    return model


class WebhookEndpoint(_Body):
    """Lago's webhook endpoint (``webhook_endpoints_controller.rb``). ``signature_algo``:
    ``hmac`` only (Lago's ``jwt`` is refused by name); absent means ``hmac``."""

    webhook_url: str | None = None
    signature_algo: str | None = None
    name: str | None = None
    event_types: list[str] | None = None


class WebhookEndpointRequest(_Body):
    webhook_endpoint: WebhookEndpoint


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself: the model as its schema."""
    # its nested models stay in its own "$defs" (JSON Schema 2020-12, OpenAPI 3.1)
    schema = model.model_json_schema()
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def query_parameters(single: Mapping[str, Sequence[str] | None],
                     many: Mapping[str, Sequence[str]] | None = None) -> dict[str, object]:
    """``openapi_extra`` for list filters a route reads from the query itself: ``single``
    (name -> its values, None for any text) and ``many`` (Lago's ``name[]``, repeated), so
    the served document shows them and a client (or schemathesis) can send them."""

    def schema(values: Sequence[str] | None) -> dict[str, object]:
        return {"type": "string", **({"enum": list(values)} if values else {})}

    parameters = [{"name": name, "in": "query", "required": False, "schema": schema(values)}
                  for name, values in single.items()]
    parameters += [{"name": f"{name}[]", "in": "query", "required": False, "style": "form",
                    "explode": True, "schema": {"type": "array", "items": schema(values)}}
                   for name, values in (many or {}).items()]
    return {"parameters": parameters}
