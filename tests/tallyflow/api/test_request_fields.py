"""Each Lago request field of the served operations is decided, and written in docs/api.md.

The table between ``<!-- request-fields:begin -->`` and ``<!-- request-fields:end -->`` is
generated from the pinned Lago document (its fields) and ``tallyflow.api.fields`` (the
code's decisions); this test keeps them equal (``python tests/tallyflow/api/
test_request_fields.py`` rewrites it). Then, table-driven, fields the table says are refused
are refused by name when sent with a value, never accepted and ignored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))  # run as a script too

from lago_spec import _deref, app_paths, served_operations, spec

from tallyflow.api.fields import CARRIED, CARRIED_FIELDS, KEPT, REFUSED, decision

DOC = Path(__file__).parents[3] / "docs" / "api.md"
BEGIN, END = "<!-- request-fields:begin -->", "<!-- request-fields:end -->"


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    schema = _deref(schema)
    found: dict[str, Any] = {}
    for branch in schema.get("allOf", ()):
        found.update(_properties(branch))
    found.update(schema.get("properties", {}))
    return found


def lago_request_fields() -> dict[tuple[str, str, str], list[str]]:
    """(method, Lago path, envelope) -> Lago's field names, for every served operation with
    a body (top-level keys that hold no object are fields of envelope ``""``)."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for template, methods in served_operations(app_paths()).items():
        for method in methods:
            body = spec()["paths"][template][method].get("requestBody")
            if body is None:
                continue
            schema = _deref(body)["content"]["application/json"]["schema"]
            for key, sub in _properties(schema).items():
                sub = _deref(sub)
                inner = _properties(sub.get("items", {}) if sub.get("type") == "array" else sub)
                if inner:
                    out[(method, template, key)] = sorted(inner)
                else:
                    out.setdefault((method, template, ""), []).append(key)
    return out


def table() -> str:
    lines = [
        "| operation | carried out | kept, no effect | refused by name |",
        "| --- | --- | --- | --- |",
    ]
    for (method, path, envelope), names in sorted(
        lago_request_fields().items(), key=lambda row: (row[0][1], row[0][0])
    ):
        chosen = {n: decision(method, path, envelope, n) for n in names}
        columns = [
            _names([n for n in names if chosen[n] == kind]) for kind in (CARRIED, KEPT, REFUSED)
        ]
        where = f"`{method.upper()} {path}`" + (f" `{envelope}`" if envelope else "")
        lines.append(f"| {where} | {' | '.join(columns)} |")
    return "\n".join(lines)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "none"


def documented() -> str:
    text = DOC.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_every_lago_request_field_is_decided_and_documented() -> None:
    fields = lago_request_fields()
    objects = {key for key, names in fields.items() if key[2]}
    assert objects <= set(CARRIED_FIELDS), sorted(objects - set(CARRIED_FIELDS))
    assert documented() == table(), "run: python tests/tallyflow/api/test_request_fields.py"


REFUSED_CASES = [  # (path, envelope, a valid document, a Lago field refused, its value)
    (
        "/api/v1/billable_metrics",
        "billable_metric",
        {"name": "T", "code": "t", "aggregation_type": "count_agg"},
        "expression",
        "round(event.properties.x)",
    ),
    (
        "/api/v1/customers",
        "customer",
        {"external_id": "c1", "name": "C"},
        "billing_configuration",
        {"invoice_grace_period": 3},
    ),
    (
        "/api/v1/customers",
        "customer",
        {"external_id": "c2", "name": "C"},
        "finalize_zero_amount_invoice",
        "skip",
    ),
]


@pytest.mark.parametrize(("path", "envelope", "document", "field", "value"), REFUSED_CASES)
def test_a_refused_field_is_refused_by_name(
    client: TestClient, path: str, envelope: str, document: dict[str, Any], field: str, value: Any
) -> None:
    method_path = path.removeprefix("/api/v1")
    assert decision("post", method_path, envelope, field) == REFUSED
    assert field in lago_request_fields()[("post", method_path, envelope)]
    answer = client.post(path, json={envelope: {**document, field: value}})
    assert answer.status_code == 422, answer.text
    assert field in str(answer.json()["error_details"]), answer.text
    assert client.post(path, json={envelope: document}).status_code == 200


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(f"{head}{BEGIN}\n\n{table()}\n\n{END}{rest.split(END, 1)[1]}")
