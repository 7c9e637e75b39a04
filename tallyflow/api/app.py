"""The Lago-compatible HTTP API: Lago's v1 paths, bodies, errors and pagination.

An entry point beside the CLI (docs/architecture.md §1): it calls the same tasks as the
``tallyflow`` commands (usage, wallets, invoices, catalog apply) so the numbers are the CLI's,
and it sends events through object storage and the ingest ledger (``tallyflow.api.pipeline``).
The app is its routers (``tallyflow.api.routers``, one per resource), the dependencies they
name (``tallyflow.api.deps``) and Lago's error shapes (the handlers below).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from tallyflow.api.balances import BalanceCache
from tallyflow.api.docs import offline_docs
from tallyflow.api.intake import InflightLimit
from tallyflow.api.keys import KeyCache
from tallyflow.api.lago import LagoError, LagoJSON, invalid
from tallyflow.api.openapi import document, shape_answers
from tallyflow.api.pipeline import Pipeline
from tallyflow.api.routers import (
    add_ons,
    alerts,
    balance,
    billable_metrics,
    coupons,
    credit_notes,
    customers,
    estimates,
    events,
    health,
    invoice_actions,
    invoices,
    lifetime_usage,
    plans,
    subscriptions,
    taxes,
    usage,
    voids,
    wallets,
    webhook_endpoints,
)
from tallyflow.api.routers.balance import BalanceFastPath
from tallyflow.api.routers.events import EventFastPath
from tallyflow.api.settings import ApiSettings

ROUTERS = (estimates, events, billable_metrics, plans, customers, subscriptions, taxes, usage,
           wallets, invoices, invoice_actions, credit_notes, voids, coupons, webhook_endpoints,
           health, add_ons, alerts, balance, lifetime_usage)


def create_app(engine: Engine, settings: ApiSettings, *, load: bool = True,
               mark: bool = True) -> FastAPI:
    """The ASGI app. ``load=False`` leaves loading to the scheduled ingest (tests, or an API
    process that should only write); ``mark=False`` loads without moving the ingest watermark
    (tests that set the watermark themselves; docs/architecture.md §23)."""
    app = FastAPI(
        title="Tallyflow (Lago-compatible API)",
        description="Lago's v1 API in front of Tallyflow's object storage, ingest and billing. "
        "Authenticate with `Authorization: Bearer <key>` (`tallyflow api-keys create`).",
        version="1",
        lifespan=_lifespan,
        default_response_class=LagoJSON,
        dependencies=[Depends(shape_answers)],
        docs_url=None,
        redoc_url=None,
    )
    app.openapi = functools.partial(document, app)  # type: ignore[method-assign]
    offline_docs(app)
    # the API's own view of the engine (same pool): a failing statement's error, and so its
    # logged traceback, never carries the bound parameters (an API key's hash, a customer)
    quiet = engine.execution_options()
    quiet.hide_parameters = True
    app.state.engine = quiet
    app.state.settings = settings
    app.state.pipeline = Pipeline(quiet, settings, load=load, mark=mark)
    app.state.keys = KeyCache(settings.key_cache_seconds)
    app.state.balances = BalanceCache(settings.balance_cache_seconds)
    app.add_exception_handler(LagoError, _lago_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _crash)
    for module in ROUTERS:
        app.include_router(module.router)
    # cached balance reads and the events posts' common case, before FastAPI's routing
    # (tallyflow/api/routers/balance.py and events.py)
    app.add_middleware(BalanceFastPath, keys=app.state.keys, balances=app.state.balances)
    app.add_middleware(EventFastPath, keys=app.state.keys, pipeline=app.state.pipeline,
                       settings=settings)
    # backpressure in front of the routes (tallyflow/api/intake.py); added last: outermost
    app.add_middleware(InflightLimit, limit=settings.max_inflight,
                       counts=app.state.pipeline.intake)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The loader and the group commit run while the app serves; on the way out, whoever
    still waits is answered before the loader stops."""
    pipeline: Pipeline = app.state.pipeline
    pipeline.start()
    committer = asyncio.create_task(pipeline.commit.run())
    try:
        yield
    finally:
        await pipeline.stop(committer)


async def _lago_error(request: Request, exc: LagoError) -> LagoJSON:
    return exc.response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> LagoJSON:
    """A path or method FastAPI does not know: Lago's 404/405 body."""
    return LagoError(exc.status_code).response()


async def _crash(request: Request, exc: Exception) -> LagoJSON:
    """Whatever a route did not foresee: Lago's 500 body in JSON, never Starlette's
    ``text/plain`` one (the server logs the traceback, without SQL parameters)."""
    return LagoError(500, "internal_error").response()


async def _validation(request: Request, exc: RequestValidationError) -> LagoJSON:
    """A query or path parameter of the wrong type: Lago's 422 ``validation_errors``
    (``{"page": ["value_is_invalid"]}``), never FastAPI's own body."""
    details: dict[str, list[str]] = {}
    for error in exc.errors():
        name = str(error["loc"][-1]) if error.get("loc") else "request"
        details.setdefault(name, []).append("value_is_invalid")
    return invalid(details).response()
