"""``/api/v1/credit_notes``: create, estimate, list, get, void in Lago's shapes, the
Idempotency-Key header, and refusals by name (Lago:
app/controllers/api/v1/credit_notes_controller.rb,
spec/requests/api/v1/credit_notes_controller_spec.rb)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from lago_python_client.models.credit_note import CreditNote as LagoCreditNote
from lago_python_client.models.credit_note import CreditNoteResponse
from sqlalchemy import Engine

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import CreditNote, CreditNoteEstimate
from tests.tasks.corrections.test_credit_notes import _fee, _finalized


def _body(invoice: dict[str, Any], fee: str, **fields: Any) -> dict[str, Any]:
    return {"credit_note": {"invoice_id": invoice["lago_id"], "reason": "other",
                            "items": [{"fee_id": fee, "amount_cents": 500}], **fields}}


def test_credit_notes_through_the_api(engine: Engine, tmp_path: Path,
                                      client: TestClient) -> None:
    invoice = _finalized(engine, tmp_path, wallet=False)
    fee = _fee(invoice, "charge", 600)
    estimate = client.post("/api/v1/credit_notes/estimate", json={"credit_note": {
        "invoice_id": invoice["lago_id"], "items": [{"fee_id": fee, "amount_cents": 500}]}})
    assert estimate.status_code == 200, estimate.text
    shown = estimate.json()["estimated_credit_note"]
    assert mismatches(shown, CreditNoteEstimate) == []
    assert shown["max_creditable_amount_cents"] == 600
    headers = {"Idempotency-Key": "k1"}
    made = client.post("/api/v1/credit_notes", headers=headers,
                       json=_body(invoice, fee, credit_amount_cents=600))
    assert made.status_code == 200, made.text
    note = made.json()["credit_note"]
    assert mismatches(note, CreditNote) == []
    # Lago's own client reads it
    assert CreditNoteResponse.parse_obj(note).total_amount_cents == 600
    # and what its CreditNote request model writes is accepted
    request = LagoCreditNote(invoice_id=invoice["lago_id"], credit_amount_cents=120,
                             items=[{"fee_id": fee, "amount_cents": 100}])
    body = json.loads(request.json())
    via_client = client.post("/api/v1/credit_notes", json={"credit_note": body})
    assert via_client.status_code == 200, via_client.text
    again = client.post("/api/v1/credit_notes", headers=headers,
                        json=_body(invoice, fee, credit_amount_cents=600))
    assert again.json()["credit_note"]["lago_id"] == note["lago_id"]
    listed = client.get("/api/v1/credit_notes",
                        params={"external_customer_id": "acme"}).json()
    assert [n["lago_id"] for n in listed["credit_notes"]][-1] == note["lago_id"]
    assert listed["meta"]["total_count"] == 2
    assert client.get(f"/api/v1/credit_notes/{note['lago_id']}").json()[
        "credit_note"]["number"] == note["number"]
    voided = client.put(f"/api/v1/credit_notes/{note['lago_id']}/void")
    assert voided.json()["credit_note"]["credit_status"] == "voided"
    again = client.put(f"/api/v1/credit_notes/{note['lago_id']}/void")
    assert (again.status_code, again.json()["code"]) == (405, "no_voidable_amount")


def test_refusals_in_lagos_shape(engine: Engine, tmp_path: Path, client: TestClient) -> None:
    invoice = _finalized(engine, tmp_path, wallet=False)
    fee = _fee(invoice, "charge", 600)
    cases = [  # (body, status, code or error details)
        (_body(invoice, fee, credit_amount_cents=600, metadata={"k": "v"}), 422,
         {"metadata": ["not_supported"]}),
        (_body(invoice, fee, credit_amount_cents=600, colour="red"), 422,
         {"colour": ["unknown_field"]}),
        (_body(invoice, fee, credit_amount_cents=700), 422,
         {"base": ["does_not_match_item_amounts"]}),
        (_body(invoice, "nope", credit_amount_cents=600), 404, "fee_not_found"),
        ({"credit_note": {**_body(invoice, fee)["credit_note"], "invoice_id": "nope"}}, 404,
         "invoice_not_found"),
    ]
    for body, status, expected in cases:
        answer = client.post("/api/v1/credit_notes", json=body)
        assert answer.status_code == status, (body, answer.text)
        got = answer.json()
        assert (got.get("error_details") if isinstance(expected, dict)
                else got["code"]) == expected
    assert client.get("/api/v1/credit_notes", params={"status": "x"}).status_code == 422
    assert client.get("/api/v1/credit_notes/nope").json()["code"] == "credit_note_not_found"
