"""Tallyflow's extension under ``/api/v1/tallyflow/``: void events, show one event.

Not Lago's (Lago has no void): the paths say so, the bodies and errors keep Lago's shapes. The
actor of a void is the API key's name. A request is all or none, like Lago's event batches:
one refused key voids nothing and is answered 422 with each refused key's reason code
(``tallyflow.models.voids.VoidOutcome``); the same call from the CLI voids the rest.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, authenticate, event_body, get_engine
from tallyflow.api.lago import LagoError, LagoJSON, invalid
from tallyflow.api.schemas import VoidRequest, request_body
from tallyflow.tasks.corrections import EventKey, VoidError, event_status, void_and_rerate

MAX_KEYS = 100  # like Lago's event batch
_BODY_KEYS = set(VoidRequest.model_fields)

router = APIRouter(prefix="/api/v1/tallyflow/events", tags=["tallyflow"], dependencies=AUTH)


@router.post("/void", openapi_extra=request_body(VoidRequest))
async def void_events(body: Any = Depends(event_body), actor: str = Depends(authenticate),
                      engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Void events of one subscription: ``{"external_subscription_id": S,
    "transaction_ids": [T, ...] (or "transaction_id": T), "reason": "..."}``. They stay
    stored, marked voided by this API key; usage and the wallet are re-rated at once."""
    keys, reason = _parse(body)
    try:
        done = await run_in_threadpool(void_and_rerate, engine, keys, actor, reason,
                                       only_if_all=True)
    except VoidError as exc:
        raise invalid({"request": [exc.message]}) from None
    if not done.applied:
        raise LagoError(422, "void_refused", {
            o.key.transaction_id: [str(o.outcome)] for o in done.refused})
    return LagoJSON({"void": done.as_dict()})


@router.get("/{external_subscription_id}/{transaction_id}")
def show_event(external_subscription_id: str, transaction_id: str,
               engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Where one event stands: status, object, row, ingest time, void history."""
    try:
        shown = event_status(engine, EventKey(external_subscription_id, transaction_id))
    except VoidError:
        raise LagoError(404, "event_not_found") from None
    return LagoJSON({"event": shown})


def _parse(body: Any) -> tuple[list[EventKey], str]:
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    problems: dict[str, list[str]] = {
        name: ["unknown_field"] for name in sorted(set(body) - _BODY_KEYS)}
    subscription = body.get("external_subscription_id")
    if not isinstance(subscription, str) or not subscription:
        problems["external_subscription_id"] = ["value_is_mandatory"]
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems["reason"] = ["value_is_mandatory"]
    single, many = body.get("transaction_id"), body.get("transaction_ids")
    if (single is None) == (many is None):
        problems["transaction_ids"] = ["give_transaction_id_or_transaction_ids"]
    ids = [single] if single is not None else many
    if not isinstance(ids, list) or not ids or not all(isinstance(t, str) and t for t in ids):
        problems.setdefault("transaction_ids", ["value_is_invalid"])
    elif len(ids) > MAX_KEYS:
        problems["transaction_ids"] = ["too_many_transaction_ids"]
    if problems:
        raise invalid(problems)
    assert isinstance(ids, list) and isinstance(subscription, str) and isinstance(reason, str)
    return [EventKey(subscription, t) for t in ids], reason
