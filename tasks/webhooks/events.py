"""``event.error``: an event the API refused, announced by webhook (lago-api
``app/services/webhooks/events/error_service.rb``, ``V1::EventErrorSerializer``: status 422,
``error``, ``message`` (the errors as JSON text) and the event as it was sent)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from tallyflow.models.lago.results import EventErrorObject
from tallyflow.tasks.webhooks.outbox import enqueue, subscribed


def event_error_object(record: Any, errors: Mapping[str, Any]) -> EventErrorObject:
    return {"status": 422, "error": "Unprocessable entity",
            "message": json.dumps(errors, default=str),
            "event": dict(record) if isinstance(record, Mapping) else {"value": record}}


def announce_event_errors(engine: Engine,
                          refused: Sequence[tuple[Any, Mapping[str, Any]]]) -> int:
    """Enqueue ``event.error`` for each (record as sent, its errors) in one transaction;
    nothing is written without an endpoint taking the type. Returns how many were written.

    The refusal is the change announced (nothing else is stored), so the transaction holds
    only the outbox rows. Not keyed: every refusal is an event of its own, as in Lago."""
    if not refused:
        return 0
    with engine.begin() as conn:
        if not subscribed(conn, "event.error"):
            return 0
        return sum(enqueue(conn, "event.error", "event_error",
                           event_error_object(record, errors)) for record, errors in refused)
