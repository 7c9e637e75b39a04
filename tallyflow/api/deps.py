"""What a route depends on, as FastAPI dependencies: the engine, the settings and the event
pipeline of the app that serves it, the API key's check, and Lago's paging parameters.

The app keeps them on ``app.state`` (``tallyflow.api.app.create_app``); a route names what it
needs (``engine: Engine = Depends(get_engine)``) instead of closing over it, so a router is a
module-level ``APIRouter`` that any app includes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Query, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.keys import KeyCache, key_name
from tallyflow.api.lago import LagoError, invalid, read_json
from tallyflow.api.pipeline import Pipeline
from tallyflow.api.settings import ApiSettings

MAX_DOCUMENT_BODY = 1024 * 1024  # a catalog document or a top-up: far below this


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


async def authenticate(request: Request, engine: Engine = Depends(get_engine)) -> str:
    """Lago's auth: ``Authorization: Bearer <key>``, else 401 ``{"status": 401, "error":
    "Unauthorized"}``. A coroutine: a key the app's ``KeyCache`` holds costs no thread-pool
    hop and no query; any other is looked up in a worker thread. The key's name is the actor
    of what the request changes (kept on ``request.state`` too)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    name = None
    if scheme.lower() == "bearer" and key:
        keys: KeyCache = request.app.state.keys
        name = keys.get(key)
        if name is None:
            name = await run_in_threadpool(key_name, engine, key)
            keys.put(key, name)
    if name is None:
        raise LagoError(401)
    request.state.api_key_name = name
    return name


# Every router but /metrics: the key is checked before anything else of the request.
AUTH = [Depends(authenticate)]


@dataclass(frozen=True)
class Paging:
    """Lago's ``page`` and ``per_page`` as given (None when absent). Checked by
    ``lago.page_args`` in the route, after the route refuses unknown parameters: a request
    with both faults is answered for the unknown parameter, as before routers."""

    page: int | None
    per_page: int | None


async def page_params(page: int | None = Query(None), per_page: int | None = Query(None)) -> Paging:
    """A coroutine, so FastAPI calls it on the event loop (a plain class would cost a
    thread-pool hop on every list request)."""
    return Paging(page, per_page)


async def event_body(request: Request, settings: ApiSettings = Depends(get_settings)) -> Any:
    """An events or void body: exact numbers, at most the configured size (413 past it)."""
    return await read_json(request, settings.max_body_bytes)


async def document_body(request: Request) -> Any:
    """A catalog document or a top-up: exact numbers, at most 1 MiB."""
    return await read_json(request, MAX_DOCUMENT_BODY)


PAGING = ("page", "per_page")


def only_params(request: Request, allowed: tuple[str, ...] | dict[str, str] = ()) -> None:
    """Query parameters Lago has and Tallyflow does not are refused by name (422), never
    ignored."""
    unknown = sorted(set(request.query_params) - set(allowed) - set(PAGING))
    if unknown:
        raise invalid({name: ["not_supported"] for name in unknown})
