"""The Lago-compatible HTTP API: Lago's v1 paths, bodies, errors and pagination.

An entry point beside the CLI (docs/architecture.md §1): it calls the same tasks as the
``tallyflow`` commands (usage, wallets, invoices, catalog apply) so the numbers are the CLI's,
and it sends events through object storage and the ingest ledger (``tallyflow.api.pipeline``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tallyflow.api import health, routes, voids
from tallyflow.api.events import CheckedEvent, check_event, event_object
from tallyflow.api.keys import key_name
from tallyflow.api.lago import LagoError, LagoJSON, invalid, read_json
from tallyflow.api.pipeline import GroupCommit, Loader, ObjectWriter, api_source
from tallyflow.api.settings import MAX_BATCH, ApiSettings

EVENT_BODY_KEYS = {"event"}
BATCH_BODY_KEYS = {"events"}


class Pipeline:
    """The group commit, its writer and the loader, started and stopped with the app."""

    def __init__(self, engine: Engine, settings: ApiSettings, load: bool = True) -> None:
        self.source = api_source(settings.source_url)
        self.writer = ObjectWriter(self.source)
        self.loader = Loader(engine, self.source) if load else None
        self.commit = GroupCommit(self.writer.write, settings.commit_seconds,
                                  settings.commit_events, self._written)
        self.received = 0

    def _written(self, ref: Any) -> None:
        if self.loader is not None:
            self.loader.notify(ref)


def create_app(engine: Engine, settings: ApiSettings, *, load: bool = True) -> FastAPI:
    """The ASGI app. ``load=False`` leaves loading to the scheduled ingest (tests, or an API
    process that should only write)."""
    pipeline = Pipeline(engine, settings, load=load)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if pipeline.loader is not None:
            pipeline.loader.start()
        committer = asyncio.create_task(pipeline.commit.run())
        try:
            yield
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await pipeline.commit.flush()  # answer whoever still waits
            if pipeline.loader is not None:
                await run_in_threadpool(pipeline.loader.stop)

    app = FastAPI(
        title="Tallyflow (Lago-compatible API)",
        description="Lago's v1 API in front of Tallyflow's object storage, ingest and billing. "
        "Authenticate with `Authorization: Bearer <key>` (`tallyflow api-keys create`).",
        version="1",
        lifespan=lifespan,
        default_response_class=LagoJSON,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.pipeline = pipeline

    @app.exception_handler(LagoError)
    async def _lago_error(request: Request, exc: LagoError) -> LagoJSON:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> LagoJSON:
        return LagoError(exc.status_code).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> LagoJSON:
        details: dict[str, list[str]] = {}
        for error in exc.errors():
            name = str(error["loc"][-1]) if error.get("loc") else "request"
            details.setdefault(name, []).append("invalid_value")
        return invalid(details).response()

    auth = authenticate(engine)

    @app.post("/api/v1/events", tags=["events"], dependencies=[Depends(auth)])
    async def create_event(request: Request) -> LagoJSON:
        """Lago's `POST /api/v1/events`: one event, answered once it is durably stored."""
        received = datetime.now(UTC)
        body = await read_json(request, settings.max_body_bytes)
        _only_keys(body, EVENT_BODY_KEYS, "event")
        checked = check_event(body["event"], received)
        if isinstance(checked, dict):
            raise invalid(checked)
        mismatch = await run_in_threadpool(customer_mismatches, engine, [checked])
        if mismatch:
            raise invalid({"external_customer_id": ["does_not_match_subscription"]})
        ref = await pipeline.commit.submit([checked.line])
        pipeline.received += 1
        written = ref.modified_at or received
        return LagoJSON({"event": event_object(checked, written, received)})

    @app.post("/api/v1/events/batch", tags=["events"], dependencies=[Depends(auth)])
    async def create_batch(request: Request) -> LagoJSON:
        """Lago's `POST /api/v1/events/batch`: up to 100 events, all or none."""
        received = datetime.now(UTC)
        body = await read_json(request, settings.max_body_bytes)
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
        mismatch = await run_in_threadpool(customer_mismatches, engine, checked)
        if mismatch:
            raise invalid({str(i): {"external_customer_id": ["does_not_match_subscription"]}
                           for i in mismatch})
        ref = await pipeline.commit.submit([c.line for c in checked])
        pipeline.received += len(checked)
        written = ref.modified_at or received
        return LagoJSON({"events": [event_object(c, written, received) for c in checked]})

    @app.get("/api/v1/tallyflow/status", tags=["tallyflow"], dependencies=[Depends(auth)])
    def status() -> LagoJSON:
        """Not Lago's: what this process received, wrote and loaded (duplicates and
        conflicting duplicates are found when an object loads, after the answer)."""
        loader = pipeline.loader.stats.as_dict() if pipeline.loader is not None else None
        return LagoJSON({"events_received": pipeline.received,
                         "objects_written": pipeline.commit.objects,
                         "source": settings.source_url, "loader": loader})

    routes.register(app, engine, auth)
    voids.register(app, engine, auth, settings.max_body_bytes)
    health.register(app, engine, auth)
    return app


def authenticate(engine: Engine) -> Callable[[Request], None]:
    """Lago's auth: ``Authorization: Bearer <key>``, else 401 ``{"status": 401, "error":
    "Unauthorized"}``. A sync dependency: FastAPI runs it in its thread pool. The key's name
    is kept on the request (``request.state.api_key_name``): the actor of what it changes."""

    def check(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        name = key_name(engine, key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if name is None:
            raise LagoError(401)
        request.state.api_key_name = name

    return check


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
    with engine.connect() as conn:
        owners: dict[str, str] = dict(conn.execute(  # type: ignore[arg-type]
            text("select s.external_id, c.external_id from subscriptions s"
                 " join customers c on c.id = s.customer_id"
                 " where s.external_id = any(:subs)"),
            {"subs": sorted(given)},
        ).all())
    return [i for i, e in enumerate(events)
            if e.external_customer_id is not None
            and e.external_subscription_id in owners
            and owners[e.external_subscription_id] != e.external_customer_id]
