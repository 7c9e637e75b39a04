"""Lago's response shapes: errors, pagination and catalog objects.

Errors are Lago's: ``{"status": 401, "error": "Unauthorized"}``, ``{"status": 404, "error":
"Not Found", "code": "customer_not_found"}`` and ``{"status": 422, "error": "Unprocessable
Entity", "code": "validation_errors", "error_details": {...}}``. Catalog objects are the stored
Lago documents (what ``tallyflow catalog export`` prints) plus Lago's read-only fields
(``lago_id``: the row id as text, as ``tallyflow wallets show`` prints it; ``created_at``...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tallyflow.api.openapi import ANSWER_SCHEMAS, fill_nulls
from tallyflow.models import number_rule
from tallyflow.models.lago.times import iso_z as iso  # the API's form (docs/architecture.md §11)
from tallyflow.tasks.ingest import loads_exact

_PHRASES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity", 500: "Internal Server Error",
            503: "Service Unavailable"}
DEFAULT_PER_PAGE = 100  # Lago's default page, and its largest
MAX_PER_PAGE = 100
# A page past this one has no rows in any Tallyflow table; its offset would overflow SQL's
# bigint before that. Refused by name (``value_is_invalid``), never a 500.
MAX_PAGE = 2**31
INVALID = "value_is_invalid"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class LagoJSON(Response):
    """JSON with exact numbers: a Decimal is written from its text, never through a float."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        # An answer of Lago's operation holds each key Lago's schema has nullable, unset as
        # null (tallyflow/api/openapi.py)
        schemas = ANSWER_SCHEMAS.get()
        if schemas and isinstance(content, dict):
            schema = schemas.get(str(self.status_code))
            content = fill_nulls(schema, content) if schema else content
        # An integer beyond 64 bits (a property of 10^24 tokens) as a string: most clients'
        # JSON readers would lose its digits (docs/architecture.md §7). Never a text 500.
        return number_rule.dumps(content, default=_default, big="string")


class LagoError(Exception):
    """Raised by a route; answered in Lago's error shape."""

    def __init__(self, status: int, code: str | None = None,
                 details: Mapping[str, Any] | None = None, error: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(code or error or str(status))
        self.status = status
        self.code = code
        self.details = details
        self.error = error
        self.extra = extra  # Tallyflow's keys after Lago's (a refusal's sentences)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status,
                                "error": self.error or _PHRASES.get(self.status, "Error")}
        if self.code:
            body["code"] = self.code
        if self.details is not None:
            body["error_details"] = self.details
        return {**body, **(self.extra or {})}

    def response(self) -> LagoJSON:
        return LagoJSON(self.body(), status_code=self.status)


def not_found(resource: str) -> LagoError:
    return LagoError(404, f"{resource}_not_found")


def invalid(details: Mapping[str, Any]) -> LagoError:
    return LagoError(422, "validation_errors", details)


def row_id(key: str) -> int | None:
    """A path's row id (a wallet's ``lago_id``) as an integer, None when it cannot name a row:
    ASCII digits only (``"²".isdigit()`` is true, and ``int`` refuses it) within bigint."""
    if not (key.isascii() and key.isdigit()):
        return None
    number = int(key)
    return number if number < 2**63 else None


def page_args(page: int | None, per_page: int | None) -> tuple[int, int]:
    page = 1 if page is None else page
    per_page = DEFAULT_PER_PAGE if per_page is None else per_page
    problems = {}
    if not 1 <= page <= MAX_PAGE:
        problems["page"] = [INVALID]
    if not 1 <= per_page <= MAX_PER_PAGE:
        problems["per_page"] = [INVALID]
    if problems:
        raise invalid(problems)
    return page, per_page


def paginated(name: str, items: Sequence[Any], page: int, per_page: int,
              total: int | None = None) -> dict[str, Any]:
    """Lago's index body: ``{name: [...], "meta": {current_page, next_page, prev_page,
    total_pages, total_count}}``. ``items``: the whole list, or this page's when ``total``
    is given."""
    count = len(items) if total is None else total
    pages = max(1, -(-count // per_page))
    shown = items[(page - 1) * per_page: page * per_page] if total is None else items
    return {
        name: list(shown),
        "meta": {
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": pages,
            "total_count": count,
        },
    }


def catalog_object(document: Mapping[str, Any], row_id: int, created_at: datetime,
                   updated_at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A stored Lago document with Lago's read-only fields."""
    return {
        **document,
        "lago_id": str(row_id),
        "created_at": iso(created_at),
        **({"updated_at": iso(updated_at)} if updated_at is not None else {}),
        **extra,
    }


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON with exact numbers; 413 past ``limit`` bytes (checked while reading,
    not only from Content-Length), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise LagoError(413, "payload_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LagoError(413, "payload_too_large")
        chunks.append(chunk)
    try:
        return loads_exact(b"".join(chunks))
    except ValueError:
        raise LagoError(400, "invalid_json", {"body": ["invalid_json"]}) from None
