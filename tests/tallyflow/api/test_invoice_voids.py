"""``POST /api/v1/invoices/{id}/void`` (Lago's ``InvoicesController#void``,
spec/requests/api/v1/invoices_controller_spec.rb) and ``tallyflow invoices void|regenerate``:
Lago's shapes and codes, a credit note on void refused by name, and the CLI's outputs."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app as cli
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import Invoice
from tests.tasks.corrections.test_invoice_voids import WALLET, _finalized
from tests.tasks.wallets.test_wallets_support import balances

runner = CliRunner()


def test_void_endpoint_and_cli(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    invoice = _finalized(engine, tmp_path)
    path = f"/api/v1/invoices/{invoice['lago_id']}/void"
    # Lago's credit note on void is not carried out: refused by name, nothing voided
    for body, params, field, code in [
        ({"generate_credit_note": True}, {}, "generate_credit_note", "not_supported"),
        ({"generate_credit_note": False, "refund_amount": 10}, {}, "refund_amount",
         "not_supported"),
        ({"reason": "x"}, {}, "reason", "unknown_field"),
        (None, {"generate_credit_note": "true"}, "generate_credit_note", "not_supported"),
    ]:
        refused = client.post(path, json=body, params=params)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error_details"] == {field: [code]}
    assert client.get(f"/api/v1/invoices/{invoice['lago_id']}").json()[
        "invoice"]["status"] == "finalized"
    # invoices_controller_spec.rb "POST /api/v1/invoices/:id/void": the voided invoice
    done = client.post(path)
    assert done.status_code == 200, done.text
    voided = done.json()["invoice"]
    assert voided["status"] == "voided" and voided["voided_at"] is not None
    assert voided["lago_id"] == invoice["lago_id"] and voided["total_due_amount_cents"] == 0
    assert mismatches(voided, Invoice) == []
    assert balances(engine)[WALLET]["cents"] == 12500
    # "when invoice is not voidable": 405, Lago's code
    again = client.post(path, json={"generate_credit_note": False})
    assert (again.status_code, again.json()) == (405, {
        "status": 405, "error": "Method Not Allowed", "code": "not_voidable"})
    missing = client.post("/api/v1/invoices/nope/void")
    assert (missing.status_code, missing.json()["code"]) == (404, "invoice_not_found")
    listed = client.get("/api/v1/invoices", params={"status": "voided"}).json()["invoices"]
    assert [i["lago_id"] for i in listed] == [invoice["lago_id"]]

    # the CLI: regenerate the voided invoice, void its successor, refuse the first again
    made = runner.invoke(cli, ["invoices", "regenerate", invoice["number"], "--json"])
    assert made.exit_code == 0, made.output
    regenerated = json.loads(made.stdout)
    assert regenerated["number"] == "TF-001-002" and regenerated["total_amount_cents"] == 0
    assert balances(engine)[WALLET]["cents"] == 12500 - 4680
    voided_again = runner.invoke(cli, ["invoices", "void", "TF-001-002"])
    assert voided_again.exit_code == 0, voided_again.output
    assert "TF-001-002: voided; 4680 cents" in voided_again.stdout
    refused_cli = runner.invoke(cli, ["invoices", "void", invoice["number"]])
    assert refused_cli.exit_code == 1 and "not_voidable" in refused_cli.output
    shown = runner.invoke(cli, ["invoices", "list", "--status", "voided", "--json"])
    assert [i["number"] for i in json.loads(shown.stdout)["invoices"]] == [
        invoice["number"], "TF-001-002"]
