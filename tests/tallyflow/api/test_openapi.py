"""The served OpenAPI document and ``/docs``: offline, with request and response schemas.

- ``/docs`` and ``/redoc`` load with no network: every script, stylesheet and icon they name
  is served by the app itself (Swagger UI from the pinned ``fastapi-offline``), none from a
  CDN.
- Every operation carries a response schema (Lago's for Lago's operations, from the pinned
  document; Tallyflow's for its own), and every operation with a body its request schema.
- ``tallyflow/api/lago_openapi.json`` is exactly the part of the pinned Lago document the API
  serves (regenerate with ``python tests/tallyflow/api/lago_spec.py``).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tallyflow.api.openapi import fill_nulls, lago_document
from tests.tallyflow.api.lago_spec import PACKAGE_COPY, app_paths, subset

NOT_OPERATIONS = ("/metrics",)


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection leaving the process fails (the test client needs none)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_offline(client: TestClient, no_network: None, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", answer.text)
    assets += re.findall(r"""url: ?["']([^"']+)["']""", answer.text)
    assert assets, answer.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        fetched = client.get(asset)
        assert fetched.status_code == 200 and fetched.content, asset
    assert not re.search(r"https?://(?!127\.0\.0\.1)", answer.text.split("<script>")[0])


def test_every_operation_has_request_and_response_schemas(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    missing = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            ok = [r for status, r in operation["responses"].items() if status.startswith("2")]
            schema = [_schema(doc, r) for r in ok]
            if not any(s and s != {"type": "string"} for s in schema):
                missing.append(f"{name}: no response schema")
            body = operation.get("requestBody")
            if (
                method in ("post", "put")
                and body is None
                and not path.endswith(("/refresh", "/finalize", "/void"))
            ):
                missing.append(f"{name}: no request schema")
            if "HTTPValidationError" in json.dumps(operation["responses"]):
                missing.append(f"{name}: FastAPI's 422 body, never answered")
    assert missing == []
    assert doc["paths"]["/api/v1/wallets/{lago_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"] == {"$ref": "#/components/schemas/Wallet"}
    assert "WalletObject" in doc["components"]["schemas"]


def _schema(doc: dict[str, Any], response: dict[str, Any]) -> Any:
    while "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].split("/")[-1]]
    return response.get("content", {}).get("application/json", {}).get("schema")


def test_the_package_copy_is_the_pinned_documents_served_part() -> None:
    assert json.loads(PACKAGE_COPY.read_text()) == json.loads(json.dumps(subset(app_paths())))


FILL_CASES = [  # (schema, answer, filled)
    ({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}, {}, {"a": None}),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, {}, {}),  # not nullable
    ({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}, {"a": "x"}, {"a": "x"}),
    (
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"b": {"type": ["integer", "null"]}}},
                }
            },
        },
        {"items": [{}, {"b": 1}]},
        {"items": [{"b": None}, {"b": 1}]},
    ),
    # a user's own document is left as sent (a charge's or an event's properties)
    (
        {
            "type": "object",
            "properties": {
                "properties": {
                    "type": "object",
                    "properties": {"amount": {"type": ["string", "null"]}},
                }
            },
        },
        {"properties": {}},
        {"properties": {}},
    ),
]


@pytest.mark.parametrize(("schema", "answer", "filled"), FILL_CASES)
def test_unset_fields_are_null_where_lagos_schema_has_them(
    schema: dict[str, Any], answer: dict[str, Any], filled: dict[str, Any]
) -> None:
    assert fill_nulls(schema, answer) == filled


def test_an_answer_holds_lagos_nullable_keys_as_null(client: TestClient) -> None:
    created = client.post(
        "/api/v1/taxes", json={"tax": {"code": "vat", "name": "VAT", "rate": "20"}}
    )
    assert created.status_code == 200, created.text
    tax = created.json()["tax"]
    nullable = [
        name
        for name, field in lago_document()["components"]["schemas"]["TaxObject"][
            "properties"
        ].items()
        if "null" in (field.get("type") or [])
    ]
    assert nullable and all(name in tax for name in nullable), (nullable, tax)


def test_each_known_difference_is_written_in_the_guide() -> None:
    """Every field a ``DIFFERENCES`` entry names appears in docs/api.md (in backticks)."""
    from pathlib import Path

    from tests.tallyflow.api.lago_spec import DIFFERENCES

    guide = (Path(__file__).parents[3] / "docs" / "api.md").read_text()
    named = {
        token for pattern in DIFFERENCES for token in re.findall(r"[a-z]+(?:_[a-z]+)+", pattern)
    }
    assert named and sorted(t for t in named if f"`{t}`" not in guide) == []
