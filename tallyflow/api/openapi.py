"""Lago's OpenAPI document, as far as the API serves it: the answers' shapes.

``lago_openapi.json`` is the part of Lago's document (the version pinned in
tests/fixtures/lago_openapi/, its commit in the file's ``info.source``) that the served
operations answer with: their responses and the components these name. It is generated from
the pinned document (``python tests/tallyflow/api/lago_spec.py``) and a test keeps it equal.
Two uses:

- **Unset fields are ``null``, as Lago writes them**: an answer of a Lago operation gets every
  key that Lago's schema for it declares nullable and the answer does not hold, as ``null``
  (``fill_nulls``). User documents inside it are left as they are: a charge's or an event's
  ``properties`` are what was sent.
- **The served OpenAPI document** (``/openapi.json``, ``/docs``) shows Lago's response
  schemas for Lago's operations (``document``); Tallyflow's own routes declare theirs.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi

_COPY = Path(__file__).with_name("lago_openapi.json")
# The schema of the answer being written (set per request by ``shape_answers``; read by
# ``LagoJSON.render``): {status: schema} of the request's Lago operation, or None.
ANSWER_SCHEMAS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "lago_answer_schemas", default=None
)
USER_DOCUMENTS = frozenset({"properties"})  # data keys whose values are the user's own
HOT_PATHS = ("/api/v1/events", "/api/v1/events/batch")  # echo what was sent, as fast as it can


@functools.cache
def lago_document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_COPY.read_text())
    return loaded


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


@functools.cache
def _templates() -> dict[str, str]:
    return {_shape("/api/v1" + template): template for template in lago_document()["paths"]}


def lago_template(method: str, route_path: str) -> str | None:
    """Lago's template of one of the API's routes (``/api/v1/plans/{key}`` ->
    ``/plans/{code}``), when Lago defines that method on it."""
    template = _templates().get(_shape(route_path))
    if template is None or method.lower() not in lago_document()["paths"][template]:
        return None
    return template


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, _, group, name = node["$ref"].split("/")
        node = lago_document()["components"][group][name]
    return node


@functools.cache
def answer_schemas(method: str, route_path: str) -> dict[str, Any] | None:
    """{status: schema} of the JSON answers Lago defines for a route."""
    template = lago_template(method, route_path)
    if route_path in HOT_PATHS:
        return None
    if template is not None:
        responses = lago_document()["paths"][template][method.lower()]["responses"]
    else:
        responses = OWN_ANSWERS.get((method.lower(), route_path), {})
    found = {}
    for status, answer in responses.items():
        schema = _deref(answer).get("content", {}).get("application/json", {}).get("schema")
        if schema:
            found[status] = schema
    return found or None


async def shape_answers(request: Request) -> None:
    """The app's dependency: this request's answers follow its Lago operation's schema."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    ANSWER_SCHEMAS.set(answer_schemas(request.method, path) if path else None)


def fill_nulls(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with each key the schema declares nullable and ``value`` lacks set to
    ``None``, at every depth the schema describes (not inside user documents)."""
    schema = _deref(schema)
    for branch in schema.get("allOf", ()):
        value = fill_nulls(branch, value)
    for branch in (*schema.get("oneOf", ()), *schema.get("anyOf", ())):
        # the branch whose required keys the answer holds (``{"alert"}`` or ``{"alerts"}``)
        required = set(_deref(branch).get("required", ()))
        if isinstance(value, dict) and required and required <= set(value):
            return fill_nulls(branch, value)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        filled = dict(value)
        for name, sub in properties.items():
            sub = _deref(sub)
            if name not in filled:
                if _nullable(sub):
                    filled[name] = None
            elif name not in USER_DOCUMENTS:
                filled[name] = fill_nulls(sub, filled[name])
        return filled
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [fill_nulls(schema["items"], item) for item in value]
    return value


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return (isinstance(kind, list) and "null" in kind) or bool(schema.get("nullable"))


def _own(key: str, meaning: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": [key],
        "properties": {
            key: {"type": "object", "additionalProperties": True, "description": meaning}
        },
    }
    return {
        "200": {"description": meaning, "content": {"application/json": {"schema": schema}}},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }


# Tallyflow's own routes (not Lago's): their answers, as the docs describe them
OWN_ANSWERS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/api/v1/tallyflow/status"): {
        "200": {
            "description": "What this process received, wrote and loaded, and its intake "
            "(docs/api.md).",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": True,
                        "required": ["intake"],
                        "properties": {"intake": {"type": "object"}},
                    }
                }
            },
        }
    },
    ("get", "/api/v1/tallyflow/health"): _own(
        "health", "Billing health, as `tallyflow health --json` (docs/operations.md)."
    ),
    ("get", "/api/v1/tallyflow/customers/{external_customer_id}/balance"): _own(
        "balance", "The running balance and `allowed` (docs/wallets.md)."
    ),
    ("post", "/api/v1/tallyflow/events/void"): _own(
        "void", "The events voided, as `tallyflow events void --json`."
    ),
    ("get", "/api/v1/tallyflow/events/{external_subscription_id}/{transaction_id}"): _own(
        "event", "One stored event and where it went (loaded, duplicate, rejected, voided)."
    ),
    # Lago's customer answer; Lago updates a customer by POST only
    ("put", "/api/v1/customers/{key}"): {
        "200": {
            "description": "Customer updated",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Customer"}}},
        },
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "404": {"$ref": "#/components/responses/NotFound"},
        "422": {"$ref": "#/components/responses/UnprocessableEntity"},
    },
}


def document(app: FastAPI) -> dict[str, Any]:
    """The served OpenAPI document: FastAPI's (paths, request bodies, parameters), with
    Lago's response schemas on Lago's operations and Lago's error shapes."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    lago = lago_document()
    components = doc.setdefault("components", {})
    for group, items in lago["components"].items():
        clash = set(items) & set(components.get(group, {}))
        assert not clash, f"Lago's components {sorted(clash)} clash with the app's"
        components.setdefault(group, {}).update(items)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            template = lago_template(method, path)
            own = OWN_ANSWERS.get((method, path))
            if template is not None:
                operation["responses"] = lago["paths"][template][method]["responses"]
            elif own is not None:
                operation["responses"] = own
    for group in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(group, None)
    _no_fastapi_422(doc)
    app.openapi_schema = doc
    return doc


def _no_fastapi_422(doc: dict[str, Any]) -> None:
    """FastAPI's own 422 body is never answered (the app answers Lago's): name Lago's."""
    lago_422 = {"$ref": "#/components/responses/UnprocessableEntity"}
    for operations in doc["paths"].values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                responses["422"] = lago_422
