"""A top-up bought through the API gets its credit invoice at once, as Lago's
``BillPaidCreditJob`` does (issue 28 item 6), once however often the request is retried."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.tasks.invoicing import list_invoices
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.rating_fixtures import apply_mistral


def test_a_paid_top_up_is_invoiced_at_once_and_once(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    open_catalog_wallets(engine)
    [wallet] = client.get("/api/v1/wallets", params={"external_customer_id": "acme"}).json()[
        "wallets"
    ]
    body = {
        "wallet_transaction": {
            "wallet_id": wallet["lago_id"],
            "paid_credits": "10",
            "granted_credits": "5",
        }
    }
    first = client.post(
        "/api/v1/wallet_transactions", json=body, headers={"Idempotency-Key": "po-7"}
    )
    assert first.status_code == 200, first.text
    posted = {t["transaction_status"]: t for t in first.json()["wallet_transactions"]}
    assert posted["granted"]["lago_invoice_id"] is None  # free credits are not invoiced
    invoice_id = posted["purchased"]["lago_invoice_id"]
    [invoice] = [
        i for i in list_invoices(engine, invoice_type="credit") if i["lago_id"] == invoice_id
    ]
    assert invoice["status"] == "finalized" and invoice["number"]
    [fee] = invoice["fees"]
    assert (fee["units"], fee["item"]["type"]) == ("10.0", "credit") or fee["units"] in (
        "10",
        "10.0",
        "10.00000",
    )

    retry = client.post(
        "/api/v1/wallet_transactions", json=body, headers={"Idempotency-Key": "po-7"}
    )
    assert retry.json()["wallet_transactions"] == first.json()["wallet_transactions"]
    credit = list_invoices(engine, invoice_type="credit")
    assert [i["lago_id"] for i in credit].count(invoice_id) == 1
    listed = client.get(f"/api/v1/wallets/{wallet['lago_id']}/wallet_transactions").json()
    assert invoice_id in {t["lago_invoice_id"] for t in listed["wallet_transactions"]}

    granted_only = client.post(
        "/api/v1/wallet_transactions",
        json={"wallet_transaction": {"wallet_id": wallet["lago_id"], "granted_credits": "1"}},
    )
    assert granted_only.status_code == 200
    assert len(list_invoices(engine, invoice_type="credit")) == len(credit)
