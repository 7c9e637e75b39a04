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


class VoidRequest(_Body):
    """Tallyflow's void (not Lago's): one subscription's events, by one or several ids."""

    external_subscription_id: str
    transaction_id: str | None = None
    transaction_ids: list[str] | None = Field(None, max_length=100)
    reason: str


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
