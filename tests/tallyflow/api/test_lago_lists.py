"""Lago's list filters and page size (issue 28): ``status[]`` of subscriptions (active by
default), the invoice filters, a wallet's transaction filters, 100 a page. Each case cites the
Lago controller it follows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.api.lago import page_args
from tallyflow.tasks.invoicing import close_periods, record_payment
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.invoicing.test_invoicing import ingested_until
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event


def listed(client: TestClient, path: str, name: str, params: Any = None) -> list[Any]:
    answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["meta"]["total_count"] == len(body[name])
    return list(body[name])


def test_lagos_page_is_100_by_default_and_at_most() -> None:
    """Lago: app/controllers/concerns/pagination.rb (PER_PAGE 100)."""
    assert page_args(None, None) == (1, 100)
    assert page_args(3, 100) == (3, 100)


def test_subscriptions_list_the_active_ones_unless_status_says(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    """Lago: app/controllers/concerns/subscription_index.rb (``status[]``, blank ->
    ["active"])."""
    apply_mistral(engine, tmp_path)
    other = {"external_customer_id": "acme", "plan_code": "mistral_per_token",
             "external_id": "sub_old", "subscription_at": "2025-01-01T05:00:00Z"}
    assert client.post("/api/v1/subscriptions", json={"subscription": other}).status_code == 200
    assert client.delete("/api/v1/subscriptions/sub_old",
                         params={"on_termination_invoice": "skip"}).status_code == 200

    def ids(params: Any = None) -> list[str]:
        return [s["external_id"] for s in listed(client, "/api/v1/subscriptions",
                                                 "subscriptions", params)]

    assert ids() == [SUB]
    assert ids({"status[]": "terminated"}) == ["sub_old"]
    assert ids([("status[]", "active"), ("status[]", "terminated")]) == [SUB, "sub_old"]
    assert ids({"status": "terminated", "external_customer_id": "acme"}) == ["sub_old"]
    assert ids({"status[]": "pending"}) == []
    wrong = client.get("/api/v1/subscriptions", params={"status[]": "gone"})
    assert (wrong.status_code, wrong.json()["error_details"]) == (
        422, {"status": ["value_is_invalid"]})


def test_invoice_and_wallet_transaction_filters(client: TestClient, engine: Engine,
                                                tmp_path: Path) -> None:
    """Lago: app/controllers/concerns/invoice_index.rb (statuses[], payment_statuses[],
    invoice_type, issuing_date_from/to) and api/v1/wallet_transactions_controller.rb
    (status, transaction_type, transaction_status)."""
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 3_000_000)])
    ingested_until(engine, datetime(2025, 3, 5, tzinfo=UTC))  # February's is finalized
    close_periods(engine, datetime(2025, 5, 10, tzinfo=UTC),
                  now=datetime(2025, 5, 10, tzinfo=UTC))
    first = listed(client, "/api/v1/invoices", "invoices")[0]
    record_payment(engine, first["lago_id"], "succeeded")
    every = listed(client, "/api/v1/invoices", "invoices")
    assert {(i["status"], i["payment_status"]) for i in every} == {
        ("finalized", "succeeded"), ("finalized", "pending"), ("draft", "pending")}

    def lago_ids(params: Any) -> list[str]:
        return [i["lago_id"] for i in listed(client, "/api/v1/invoices", "invoices", params)]

    for params, keep in [
        ({"statuses[]": "finalized"}, lambda i: i["status"] == "finalized"),
        ([("statuses[]", "draft"), ("statuses[]", "voided")], lambda i: i["status"] == "draft"),
        ({"payment_statuses[]": "pending"}, lambda i: i["payment_status"] == "pending"),
        ({"payment_status": "succeeded"}, lambda i: i["payment_status"] == "succeeded"),
        ({"invoice_type": "subscription"}, lambda i: i["invoice_type"] == "subscription"),
        ({"issuing_date_from": every[1]["issuing_date"]},
         lambda i: i["issuing_date"] >= every[1]["issuing_date"]),
        ({"issuing_date_to": every[0]["issuing_date"]},
         lambda i: i["issuing_date"] <= every[0]["issuing_date"]),
    ]:
        assert lago_ids(params) == [i["lago_id"] for i in every if keep(i)], params
    for params, field in [({"statuses[]": "paid"}, "statuses"),
                          ({"invoice_type": "monthly"}, "invoice_type"),
                          ({"issuing_date_from": "march"}, "issuing_date_from"),
                          ({"search_term": "acme"}, "search_term")]:
        refused = client.get("/api/v1/invoices", params=params)
        assert refused.status_code == 422 and field in refused.json()["error_details"]

    open_catalog_wallets(engine)
    [wallet] = listed(client, "/api/v1/wallets", "wallets", {"external_customer_id": "acme"})
    path = f"/api/v1/wallets/{wallet['lago_id']}/wallet_transactions"
    every = listed(client, path, "wallet_transactions")
    for params in ({"status": "pending"}, {"transaction_type": "inbound"},
                   {"transaction_status": "granted"}, {"transaction_status": "purchased"}):
        [(name, value)] = params.items()
        assert listed(client, path, "wallet_transactions", params) == [
            t for t in every if t[name] == value], params
    wrong = client.get(path, params={"transaction_type": "sideways"})
    assert wrong.json()["error_details"] == {"transaction_type": ["value_is_invalid"]}
