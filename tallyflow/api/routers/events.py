"""Lago's ``POST /api/v1/events`` and ``/events/batch``, and Tallyflow's
``GET /api/v1/tallyflow/status`` (what this process received, wrote and loaded).

An event is answered once it is durably stored: the group commit writes it into an object
that the ingest loads (``tallyflow.api.pipeline``).

``EventFastPath`` answers the common case of both posts before FastAPI's routing (a cached
key, a valid body, no ``external_customer_id`` to check): the same checks, the same
``Pipeline.submit`` (its rate limit and bounded intake), the same answer, without the
per-request cost of dependency solving and exception middleware (docs/architecture.md §22).
Every other request (an unknown key, an invalid event, a customer to check, a body without
Content-Length or over the limit) goes to the routes below, which answer it as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, event_body, get_engine, get_pipeline
from tallyflow.api.events import CheckedEvent, check_event, event_object
from tallyflow.api.keys import KeyCache
from tallyflow.api.lago import LagoError, LagoJSON, invalid
from tallyflow.api.pipeline import Pipeline
from tallyflow.api.schemas import BatchRequest, EventRequest, request_body
from tallyflow.api.settings import MAX_BATCH, ApiSettings
from tallyflow.tasks.catalog import subscription_owners
from tallyflow.tasks.ingest import loads_exact
from tallyflow.tasks.webhooks import announce_event_errors

EVENT_BODY_KEYS = set(EventRequest.model_fields)
BATCH_BODY_KEYS = set(BatchRequest.model_fields)

router = APIRouter(dependencies=AUTH)


@router.post("/api/v1/events", tags=["events"], openapi_extra=request_body(EventRequest))
async def create_event(request: Request, body: Any = Depends(event_body),
                       engine: Engine = Depends(get_engine),
                       pipeline: Pipeline = Depends(get_pipeline)) -> LagoJSON:
    """Lago's `POST /api/v1/events`: one event, answered once it is durably stored."""
    received = datetime.now(UTC)
    _only_keys(body, EVENT_BODY_KEYS, "event")
    checked = check_event(body["event"], received)
    if isinstance(checked, dict):
        await run_in_threadpool(announce_event_errors, engine, [(body["event"], checked)])
        raise invalid(checked)
    mismatch = (await run_in_threadpool(customer_mismatches, engine, [checked])
                if checked.external_customer_id is not None else [])
    if mismatch:
        await run_in_threadpool(announce_event_errors, engine, [(body["event"], _MISMATCH)])
        raise invalid(_MISMATCH)
    ref = await pipeline.submit(request.state.api_key_name, [checked.line])
    written = ref.modified_at or received
    return LagoJSON({"event": event_object(checked, written, received)})


@router.post("/api/v1/events/batch", tags=["events"],
             openapi_extra=request_body(BatchRequest))
async def create_batch(request: Request, body: Any = Depends(event_body),
                       engine: Engine = Depends(get_engine),
                       pipeline: Pipeline = Depends(get_pipeline)) -> LagoJSON:
    """Lago's `POST /api/v1/events/batch`: up to 100 events, all or none."""
    received = datetime.now(UTC)
    try:
        checked = _check_batch(body, received)
    except LagoError as error:
        await run_in_threadpool(_announce_batch, engine, body, error)
        raise
    # no thread-pool hop when no event names its customer (nothing to contradict)
    mismatch = (await run_in_threadpool(customer_mismatches, engine, checked)
                if any(c.external_customer_id is not None for c in checked) else [])
    if mismatch:
        refused = invalid({str(i): _MISMATCH for i in mismatch})
        await run_in_threadpool(_announce_batch, engine, body, refused)
        raise refused
    ref = await pipeline.submit(request.state.api_key_name, [c.line for c in checked])
    written = ref.modified_at or received
    return LagoJSON({"events": [event_object(c, written, received) for c in checked]})


@router.get("/api/v1/tallyflow/status", tags=["tallyflow"])
async def status(pipeline: Pipeline = Depends(get_pipeline)) -> LagoJSON:
    """Not Lago's: what this process received, wrote and loaded (duplicates and
    conflicting duplicates are found when an object loads, after the answer)."""
    return LagoJSON(pipeline.status())


_MISMATCH = {"external_customer_id": ["does_not_match_subscription"]}


def _announce_batch(engine: Engine, body: Any, refused: LagoError) -> None:
    """``event.error`` for each event of a batch refused by its index (a refusal of the
    body as a whole names no event, and announces none)."""
    events = body.get("events") if isinstance(body, dict) else None
    details = refused.details or {}
    if not isinstance(events, list):
        return
    announce_event_errors(engine, [(events[int(i)], errors) for i, errors in details.items()
                                   if i.isdigit() and int(i) < len(events)])


def _check_batch(body: Any, received: datetime) -> list[CheckedEvent]:
    """Every event of a batch checked; 422 with each faulty event's errors by its index."""
    _only_keys(body, BATCH_BODY_KEYS, "events")
    events = body["events"]
    if not isinstance(events, list):
        raise invalid({"events": ["invalid_type"]})
    if not events:
        raise invalid({"events": ["no_events"]})
    if len(events) > MAX_BATCH:
        raise invalid({"events": ["too_many_events"]})
    checked: list[CheckedEvent] = []
    errors: dict[str, Any] = {}
    for index, record in enumerate(events):
        result = check_event(record, received)
        if isinstance(result, dict):
            errors[str(index)] = result
        else:
            checked.append(result)
    if errors:
        raise invalid(errors)
    return checked


def _only_keys(body: Any, allowed: set[str], required: str) -> None:
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    if required not in body or body[required] is None:
        raise LagoError(400, "missing_parameter", {required: ["value_is_mandatory"]})
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})


def customer_mismatches(engine: Engine, events: list[CheckedEvent]) -> list[int]:
    """Events whose ``external_customer_id`` is not their subscription's customer (an unknown
    subscription has nothing to contradict: its event is stored and reported unbillable)."""
    given = {e.external_subscription_id for e in events if e.external_customer_id is not None}
    if not given:
        return []
    owners = subscription_owners(engine, sorted(given))
    return [i for i, e in enumerate(events)
            if e.external_customer_id is not None
            and e.external_subscription_id in owners
            and owners[e.external_subscription_id] != e.external_customer_id]


_log = logging.getLogger(__name__)
EVENTS, BATCH = "/api/v1/events", "/api/v1/events/batch"
Message = dict[str, Any]


class EventFastPath:
    """ASGI middleware: ``POST /events`` and ``/events/batch`` in their common case, or the
    request handed on unchanged (its body replayed) to the routes above."""

    def __init__(self, app: Any, keys: KeyCache, pipeline: Pipeline,
                 settings: ApiSettings) -> None:
        self.app, self.keys, self.pipeline, self.settings = app, keys, pipeline, settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or scope["path"] not in (EVENTS, BATCH):
            await self.app(scope, receive, send)
            return
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as Starlette
        name = self._key_name(headers.get(b"authorization", b""))
        length = headers.get(b"content-length", b"")
        if name is None or not length.isdigit() or int(length) > self.settings.max_body_bytes:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        if body is None:  # the client went away
            return
        answer = await self._answer(scope["path"], body, name)
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        self.pipeline.answered_fast += 1
        await answer(scope, receive, send)

    def _key_name(self, header: bytes) -> str | None:
        scheme, _, key = header.decode("latin-1").partition(" ")
        key = key.strip()
        return self.keys.get(key) if scheme.lower() == "bearer" and key else None

    async def _answer(self, path: str, data: bytes, name: str) -> LagoJSON | None:
        """The answer of the common case, or None: the route decides."""
        received = datetime.now(UTC)
        try:
            body = loads_exact(data)
            if path == EVENTS:
                _only_keys(body, EVENT_BODY_KEYS, "event")
                one = check_event(body["event"], received)
                if isinstance(one, dict):
                    return None
                checked = [one]
            else:
                checked = _check_batch(body, received)
        except (ValueError, LagoError):
            return None
        if any(c.external_customer_id is not None for c in checked):
            return None
        try:
            ref = await self.pipeline.submit(name, [c.line for c in checked])
        except LagoError as refused:  # 429: the key's rate, or the intake's bound
            return refused.response()
        except Exception:  # as the app's handler answers a route's crash
            _log.exception("storing API events failed")
            return LagoError(500, "internal_error").response()
        written = ref.modified_at or received
        if path == EVENTS:
            return LagoJSON({"event": event_object(checked[0], written, received)})
        return LagoJSON({"events": [event_object(c, written, received) for c in checked]})


async def _read_body(receive: Callable[[], Awaitable[Message]]
                     ) -> tuple[list[Message], bytes | None]:
    messages: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return messages, None
        messages.append(message)
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message],
            receive: Callable[[], Awaitable[Message]]) -> Callable[[], Awaitable[Message]]:
    """``receive`` for the routes: the body already read, then the connection's own."""
    pending = list(messages)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()

    return again
