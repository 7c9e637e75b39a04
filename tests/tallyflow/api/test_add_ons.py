"""Lago's ``/api/v1/add_ons`` (CRUD, spec/requests/api/v1/add_ons_controller_spec.rb) and
``POST /api/v1/invoices`` (spec/requests/api/v1/invoices_spec.rb "POST /api/v1/invoices"): a
one-off invoice in Lago's shape; with an ``Idempotency-Key`` a retry makes nothing more."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.api.schemas import OneOffFee, OneOffInvoice
from tallyflow.models.invoicing.one_off import (
    FEE_FIELDS,
    INVOICE_FIELDS,
    INVOICE_NO_EFFECT,
    INVOICE_NOT_SUPPORTED,
)
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import Invoice
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.rating_fixtures import MISTRAL

SETUP = {"add_on": {"code": "setup", "name": "Setup", "amount_cents": 1000,
                    "amount_currency": "USD", "description": "One-time setup"}}


def test_the_request_schema_names_the_fields_the_check_reads() -> None:
    assert tuple(OneOffFee.model_fields) == FEE_FIELDS
    assert tuple(OneOffInvoice.model_fields) == (*INVOICE_FIELDS, *INVOICE_NO_EFFECT,
                                                 *INVOICE_NOT_SUPPORTED)


def test_add_ons_crud(client: TestClient) -> None:
    made = client.post("/api/v1/add_ons", json=SETUP)
    assert made.status_code == 200, made.text
    add_on = made.json()["add_on"]
    assert {k: add_on[k] for k in ("code", "name", "amount_cents", "amount_currency",
                                   "description")} == {
        "code": "setup", "name": "Setup", "amount_cents": 1000, "amount_currency": "USD",
        "description": "One-time setup"}
    assert add_on["lago_id"] and add_on["created_at"]
    again = client.post("/api/v1/add_ons", json=SETUP)
    assert (again.status_code, again.json()["error_details"]) == (
        422, {"code": ["value_already_exist"]})
    bad = client.post("/api/v1/add_ons", json={"add_on": {**SETUP["add_on"], "amount_cents": 0}})
    assert bad.status_code == 422, bad.text
    changed = client.put("/api/v1/add_ons/setup", json={"add_on": {"amount_cents": 1500}})
    assert changed.json()["add_on"]["amount_cents"] == 1500
    listed = client.get("/api/v1/add_ons").json()
    assert [a["code"] for a in listed["add_ons"]] == ["setup"]
    assert listed["meta"]["total_count"] == 1
    deleted = client.delete("/api/v1/add_ons/setup")
    assert deleted.status_code == 200 and deleted.json()["add_on"]["deleted_at"]
    assert client.get("/api/v1/add_ons/setup").json()["code"] == "add_on_not_found"
    assert client.get("/api/v1/add_ons").json()["add_ons"] == []
    assert client.delete("/api/v1/add_ons/setup").status_code == 404


def test_post_invoices_makes_one_one_off_invoice_per_idempotency_key(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    assert apply_catalog(engine, [MISTRAL]).ok  # acme, a wallet: 25 granted credits (1 USD)
    open_catalog_wallets(engine)
    assert client.post("/api/v1/add_ons", json=SETUP).status_code == 200
    body = {"invoice": {"external_customer_id": "acme", "currency": "USD", "skip_psp": True,
                        "fees": [{"add_on_code": "setup", "units": "1.5",
                                  "unit_amount_cents": 3001, "description": "desc"}]}}
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/api/v1/invoices", json=body, headers=headers)
    assert first.status_code == 200, first.text
    invoice = first.json()["invoice"]
    assert mismatches(invoice, Invoice) == []
    # 3001 x 1.5 = 4501.5 -> 4502 (half up); the wallet's 2500 paid, 2002 due
    assert (invoice["invoice_type"], invoice["status"], invoice["fees_amount_cents"],
            invoice["prepaid_credit_amount_cents"], invoice["total_amount_cents"]) == (
        "one_off", "finalized", 4502, 2500, 2002)
    [fee] = invoice["fees"]
    assert (fee["item"]["type"], fee["precise_amount_cents"], fee["description"],
            fee["unit_amount_cents"]) == ("add_on", "4501.5", "desc", 3001)
    retry = client.post("/api/v1/invoices", content=json.dumps(body), headers=headers)
    assert retry.json()["invoice"]["lago_id"] == invoice["lago_id"]
    other = client.post("/api/v1/invoices", json={"invoice": {**body["invoice"], "fees": [
        {"add_on_code": "setup"}]}}, headers=headers)
    assert (other.status_code, other.json()["error_details"]) == (
        422, {"idempotency_key": ["idempotency_key_reused"]})
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from invoices"
                                 " where invoice_type = 'one_off'")).scalar_one() == 1
    got = client.get(f"/api/v1/invoices/{invoice['lago_id']}").json()["invoice"]
    assert got["fees"] == invoice["fees"]
    listed = client.get("/api/v1/invoices", params={"external_customer_id": "acme"}).json()
    assert [i["lago_id"] for i in listed["invoices"]] == [invoice["lago_id"]]


def test_post_invoices_answers_lagos_errors(client: TestClient, engine: Engine) -> None:
    assert apply_catalog(engine, [MISTRAL]).ok
    for body, status, code in [
        ({"invoice": {"external_customer_id": "acme", "fees": [{"add_on_code": "nope"}]}},
         404, "add_on_not_found"),
        ({"invoice": {"external_customer_id": "nobody", "fees": [{"add_on_code": "x"}]}},
         404, "customer_not_found"),
        ({"invoice": {"external_customer_id": "acme", "fees": []}}, 404, "fees_not_found"),
        ({"invoice": {"external_customer_id": "acme", "fees": [{"add_on_code": "x"}],
                      "payment_method": {"payment_method_type": "manual"}}},
         422, "validation_errors"),
        ({"fees": []}, 400, "missing_parameter"),
    ]:
        answer = client.post("/api/v1/invoices", json=body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
