"""Lago's ``POST /api/v1/events/estimate_fees``: the fees one event would get from the
subscription's charges paid in advance, priced now by the billing cycle's own code
(``tasks.invoicing.estimate_advance_fees``, Lago's ``Fees::EstimatePayInAdvanceService``).
Nothing is stored: no event, no fee. docs/api.md "Known differences from Lago".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, event_body, get_engine
from tallyflow.api.fields import CARRIED_FIELDS
from tallyflow.api.lago import LagoError, LagoJSON, invalid, iso
from tallyflow.api.schemas import EventRequest, request_body
from tallyflow.models.invoicing import InvoiceFee
from tallyflow.models.rating.money import plain_text

router = APIRouter(prefix="/api/v1/events", tags=["events"], dependencies=AUTH)

# Lago reads these; timestamp is Lago's too but an estimate is always "now" (Lago sets
# Time.current), so a timestamp given is refused rather than ignored.
_KEYS = set(CARRIED_FIELDS[("post", "/events/estimate_fees", "event")])


@router.post("/estimate_fees", openapi_extra=request_body(EventRequest))
async def estimate_fees(body: Any = Depends(event_body),
                        engine: Engine = Depends(get_engine)) -> LagoJSON:
    """``{"event": {code, external_subscription_id, properties, transaction_id?}}`` ->
    ``{"fees": [...]}``; 422 ``does_not_match_an_instant_charge`` when no charge paid in
    advance of the subscription's plan has this code (Lago's)."""
    event = _parse(body)
    return await run_in_threadpool(_estimate, engine, event)


def _parse(body: Any) -> dict[str, Any]:
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        raise LagoError(400, "bad_request", {"event": ["value_is_mandatory"]})
    given = {k: v for k, v in event.items() if v is not None}
    problems: dict[str, list[str]] = {k: ["not_supported"] for k in sorted(set(given) - _KEYS)}
    for name in ("code", "external_subscription_id"):
        if not isinstance(given.get(name), str) or not given[name]:
            problems[name] = ["value_is_mandatory"]
    if not isinstance(given.get("properties", {}), dict):
        problems["properties"] = ["value_is_invalid"]
    if problems:
        raise invalid(problems)
    return given


def _estimate(engine: Engine, event: dict[str, Any]) -> LagoJSON:
    from tallyflow.tasks.invoicing import EstimateError, estimate_advance_fees

    try:
        currency, fees = estimate_advance_fees(
            engine, event["external_subscription_id"], event["code"],
            event.get("properties", {}), datetime.now(UTC))
    except EstimateError as exc:
        if exc.code == "not_found":
            raise LagoError(404, "subscription_not_found") from None
        raise invalid({exc.field: [exc.code]}) from None
    transaction = event.get("transaction_id")
    return LagoJSON({"fees": [_fee(f, currency, transaction) for f in fees]})


def _fee(fee: InvoiceFee, currency: str, transaction_id: str | None) -> dict[str, Any]:
    """Lago's ``V1::FeeSerializer`` fields of a fee not yet stored (no ids)."""
    return {
        "lago_id": None, "lago_invoice_id": None,
        "external_subscription_id": fee.external_subscription_id,
        "event_transaction_id": transaction_id,
        "amount_cents": fee.amount_cents,
        "precise_amount_cents": plain_text(fee.precise_amount_cents),
        "amount_currency": currency,
        "taxes_rate": plain_text(fee.taxes_rate),
        "taxes_amount_cents": fee.taxes_amount_cents,
        "taxes_precise_amount_cents": plain_text(fee.taxes_precise_amount_cents),
        "total_amount_cents": fee.total_amount_cents,
        "total_amount_currency": currency,
        "units": plain_text(fee.units), "events_count": 1, "pay_in_advance": True,
        "from_date": iso(fee.from_datetime), "to_date": iso(fee.to_datetime),
        "item": {"type": "charge", "code": fee.code, "name": fee.name,
                 "invoice_display_name": fee.invoice_display_name or fee.name,
                 "filter_invoice_display_name": fee.filter_invoice_display_name,
                 "grouped_by": dict(fee.grouped_by),
                 "lago_item_id": None if fee.charge_id is None else str(fee.charge_id)},
    }
