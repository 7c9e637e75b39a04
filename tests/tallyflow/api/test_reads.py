"""Read paths: current usage, wallets and their transactions, invoices and the catalog, with
Lago's pagination and 404s; every figure equals what the CLI prints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app as cli
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import (
    ApiCustomerUsage,
    ApiWallet,
    CustomerUsage,
    Invoice,
    InvoiceFee,
    WalletOverview,
    WalletTransaction,
)
from tallyflow.tasks.invoicing import close_periods
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tallyflow.api.conftest import wait_for
from tests.tallyflow.api.test_events import event
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

runner = CliRunner()


def cli_json(*args: str) -> Any:
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_current_usage_is_the_clis(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    batch = [event(f"u{i}", tokens=250_000) for i in range(8)]
    assert client.post("/api/v1/events/batch", json={"events": batch}).status_code == 200
    wait_for(engine, "select count(*) from events", 8)
    answer = client.get("/api/v1/customers/acme/current_usage",
                        params={"external_subscription_id": SUB})
    assert answer.status_code == 200, answer.text
    usage = answer.json()["customer_usage"]
    expected = cli_json("usage", SUB)
    assert usage["amount_cents"] == expected["amount_cents"] == 200  # 2M small input tokens
    assert usage["charges_usage"][0]["units"] == expected["charges_usage"][0]["units"]
    assert usage["charges_usage"][0]["total_aggregated_units"] == usage["charges_usage"][0][
        "units"]
    assert {k: v for k, v in usage.items() if k != "charges_usage"} == {
        **{k: v for k, v in expected.items() if k != "charges_usage"},
        "lago_invoice_id": None}  # Lago's key, null: the usage is not invoiced yet
    # the two shapes of customer usage (docs/architecture.md §11): the API's has Lago's
    # total_aggregated_units, the CLI's does not
    assert mismatches(usage, ApiCustomerUsage) == []
    assert mismatches(expected, CustomerUsage) == []
    assert mismatches(expected, ApiCustomerUsage) != []


def test_current_usage_names_the_events_that_bill_nothing(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    """A Tallyflow extension at the top of Lago's customer_usage (Lago clients ignore it):
    values that are not numbers, and events no charge filter prices, with sample ids."""
    apply_mistral(engine, tmp_path)
    batch = [event("ok", tokens=1000), event("nan-1", tokens="abc"),
             event("nan-2", tokens="1,000"), event("nan-3", tokens=True),
             {**event("odd-model"), "properties": {"tokens": 5, "model": "gpt-9", "type": "input"}}]
    assert client.post("/api/v1/events/batch", json={"events": batch}).status_code == 200
    wait_for(engine, "select count(*) from events", 5)
    usage = client.get("/api/v1/customers/acme/current_usage",
                       params={"external_subscription_id": SUB}).json()["customer_usage"]
    assert usage["tallyflow_unbillable"] == [
        {"billable_metric_code": "mistral_tokens", "reason": "not_a_number", "count": 3,
         "sample_transaction_ids": ["nan-1", "nan-2", "nan-3"]},
        {"billable_metric_code": "mistral_tokens", "reason": "unpriced", "count": 1,
         "sample_transaction_ids": ["odd-model"]},
    ]
    assert usage["tallyflow_unbillable"] == cli_json("usage", SUB)["tallyflow_unbillable"]
    assert mismatches(usage, ApiCustomerUsage) == []
    assert usage["amount_cents"] == 100  # the one good event (1000 small input tokens)


@pytest.mark.parametrize("path, params, status, code", [
    ("/api/v1/customers/nobody/current_usage", {"external_subscription_id": SUB}, 404,
     "customer_not_found"),
    ("/api/v1/customers/acme/current_usage", {"external_subscription_id": "sub_x"}, 404,
     "subscription_not_found"),
    ("/api/v1/customers/acme/current_usage", {}, 422, "validation_errors"),
    ("/api/v1/customers/acme/current_usage",
     {"external_subscription_id": SUB, "apply_taxes": "false"}, 422, "validation_errors"),
    ("/api/v1/customers/nobody", {}, 404, "customer_not_found"),
    ("/api/v1/plans/nothing", {}, 404, "plan_not_found"),
    ("/api/v1/billable_metrics/nothing", {}, 404, "billable_metric_not_found"),
    ("/api/v1/subscriptions/nothing", {}, 404, "subscription_not_found"),
    ("/api/v1/taxes/nothing", {}, 404, "tax_not_found"),
    ("/api/v1/wallets/999999", {}, 404, "wallet_not_found"),
    ("/api/v1/wallets/abc/wallet_transactions", {}, 404, "wallet_not_found"),
    ("/api/v1/wallets", {"external_customer_id": "nobody"}, 404, "customer_not_found"),
    ("/api/v1/invoices/nothing", {}, 404, "invoice_not_found"),
    ("/api/v1/plans", {"per_page": "1000"}, 422, "validation_errors"),
    ("/api/v1/plans", {"page": "zero"}, 422, "validation_errors"),
    ("/api/v1/plans", {"search_term": "x"}, 422, "validation_errors"),
    ("/api/v1/nowhere", {}, 404, None),
])
def test_lagos_error_shapes(client: TestClient, engine: Engine, tmp_path: Path, path: str,
                            params: dict[str, str], status: int, code: str | None) -> None:
    apply_mistral(engine, tmp_path)
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == status and body["error"]
    assert body.get("code") == code


def test_catalog_reads_and_pagination(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    metric = client.get("/api/v1/billable_metrics/mistral_tokens").json()["billable_metric"]
    assert metric["code"] == "mistral_tokens" and metric["lago_id"].isdigit()
    assert [f["key"] for f in metric["filters"]] == ["model", "type"]
    plan = client.get("/api/v1/plans/mistral_per_token").json()["plan"]
    assert plan["charges"][0]["charge_model"] == "package"
    customer = client.get("/api/v1/customers/acme").json()["customer"]
    assert customer["applicable_timezone"] == "America/New_York"
    sub = client.get(f"/api/v1/subscriptions/{SUB}").json()["subscription"]
    assert sub["external_customer_id"] == "acme" and sub["plan_code"] == "mistral_per_token"
    assert sub["status"] == "active"
    listed = client.get("/api/v1/subscriptions", params={"external_customer_id": "acme"}).json()
    assert [s["external_id"] for s in listed["subscriptions"]] == [SUB]
    none = client.get("/api/v1/subscriptions", params={"external_customer_id": "other"}).json()
    assert none == {"subscriptions": [], "meta": {"current_page": 1, "next_page": None,
                                                  "prev_page": None, "total_pages": 1,
                                                  "total_count": 0}}
    pages = client.get("/api/v1/customers", params={"per_page": 1, "page": 1}).json()
    assert pages["meta"]["total_count"] == 1 and len(pages["customers"]) == 1
    past = client.get("/api/v1/customers", params={"per_page": 1, "page": 2}).json()
    assert past["customers"] == [] and past["meta"]["prev_page"] == 1


def test_wallets_top_ups_and_transactions(client: TestClient, engine: Engine,
                                          tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    open_catalog_wallets(engine)  # as `tallyflow apply` does
    wallets = client.get("/api/v1/wallets", params={"external_customer_id": "acme"}).json()
    [wallet] = wallets["wallets"]
    shown = cli_json("wallets", "show", "acme")["wallets"][0]
    assert {k: wallet[k] for k in shown} == shown
    assert wallet["credits_balance"] == "25.00000"  # granted settle at once, paid wait
    lago_id = wallet["lago_id"]
    assert client.get(f"/api/v1/wallets/{lago_id}").json()["wallet"] == wallet

    body = {"wallet_transaction": {"wallet_id": lago_id, "paid_credits": "10",
                                   "granted_credits": "5", "voided_credits": None}}
    first = client.post("/api/v1/wallet_transactions", json=body,
                        headers={"Idempotency-Key": "po-1"})
    assert first.status_code == 200, first.text
    posted = first.json()["wallet_transactions"]
    assert sorted((t["transaction_status"], t["credit_amount"], t["status"]) for t in posted) == [
        ("granted", "5.00000", "settled"), ("purchased", "10.00000", "pending")]
    retry = client.post("/api/v1/wallet_transactions", json=body,
                        headers={"Idempotency-Key": "po-1"})
    assert retry.status_code == 200 and retry.json()["wallet_transactions"] == posted
    after = client.get(f"/api/v1/wallets/{lago_id}").json()["wallet"]
    assert after["credits_balance"] == "30.00000"
    overview = cli_json("wallets", "show", "acme")
    unset = {k: None for k, v in after.items() if v is None and k not in overview["wallets"][0]}
    assert after == {**overview["wallets"][0], "lago_customer_id": wallet["lago_customer_id"],
                     **unset}  # and Lago's keys Tallyflow has no value for, as null
    # one wallet, two outputs; one transaction base, two forms (docs/architecture.md §11)
    assert mismatches(after, ApiWallet) == []
    assert mismatches(overview, WalletOverview) == []
    assert [mismatches(t, WalletTransaction) for t in posted] == [[], []]
    assert {t["lago_id"] for t in overview["wallet_transactions"]} >= {
        t["lago_id"] for t in posted}

    listed = client.get(f"/api/v1/wallets/{lago_id}/wallet_transactions",
                        params={"per_page": 2}).json()
    assert listed["meta"]["total_count"] == 4 and len(listed["wallet_transactions"]) == 2
    assert listed["meta"]["next_page"] == 2
    assert [mismatches(t, WalletTransaction) for t in listed["wallet_transactions"]] == [[], []]

    refused = client.post("/api/v1/wallet_transactions", json={"wallet_transaction": {
        "wallet_id": lago_id, "paid_credits": "1", "metadata": [{"key": "a", "value": "b"}]}})
    assert refused.status_code == 422
    assert refused.json()["error_details"] == {"metadata": ["not_supported"]}
    negative = client.post("/api/v1/wallet_transactions", json={"wallet_transaction": {
        "wallet_id": lago_id, "paid_credits": "-1"}})
    assert negative.json()["error_details"] == {"paid_credits": ["value_is_invalid"]}


def without_nulls_beyond(answer: Any, cli: Any) -> Any:
    """The API's answer less the ``null`` keys the CLI's output does not have."""
    if isinstance(answer, dict) and isinstance(cli, dict):
        return {k: without_nulls_beyond(v, cli.get(k)) for k, v in answer.items()
                if k in cli or v is not None}
    if isinstance(answer, list) and isinstance(cli, list) and len(answer) == len(cli):
        return [without_nulls_beyond(a, c) for a, c in zip(answer, cli, strict=True)]
    return answer


def test_invoices_are_the_clis(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 3_000_000)])
    close_periods(engine, datetime(2025, 5, 10, tzinfo=UTC), now=datetime(2025, 5, 10,
                                                                           tzinfo=UTC))
    expected = cli_json("invoices", "list")["invoices"]
    assert len(expected) >= 2
    listed = client.get("/api/v1/invoices", params={"per_page": 1}).json()
    assert [i["lago_id"] for i in listed["invoices"]] == [expected[0]["lago_id"]]
    assert listed["meta"]["total_count"] == len(expected)
    everything = client.get("/api/v1/invoices",
                            params={"external_customer_id": "acme", "per_page": 100}).json()
    for got, cli_invoice in zip(everything["invoices"], expected, strict=True):
        # the API adds Lago's keys Tallyflow has no value for, as null
        assert without_nulls_beyond(
            {k: v for k, v in got.items() if k not in ("customer", "number")}, cli_invoice) == {
            k: v for k, v in cli_invoice.items() if k not in ("customer", "number")}
        assert got["number"] == (cli_invoice["number"] or "")
        assert got["customer"]["external_id"] == cli_invoice["customer"]["external_id"]
    one = client.get(f"/api/v1/invoices/{expected[0]['lago_id']}").json()["invoice"]
    # the same invoice; Lago's schemas of the two answers name other unset keys (null)
    first = everything["invoices"][0]
    assert without_nulls_beyond(one, first) == without_nulls_beyond(first, one)
    assert [mismatches(i, Invoice) for i in everything["invoices"]] == [[]] * len(expected)
    assert [mismatches(i, Invoice) for i in expected] == [[]] * len(expected)
    fees = [fee for invoice in everything["invoices"] for fee in invoice["fees"]]
    assert fees and [mismatches(fee, InvoiceFee) for fee in fees] == [[] for _ in fees]


def test_invoices_are_paged_in_sql(client: TestClient, engine: Engine, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A page reads and builds only its own invoices (LIMIT/OFFSET and a count), in the
    CLI's order, with Lago's meta; a page past the end is empty."""
    import tallyflow.tasks.invoicing.documents as documents

    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 3_000_000)])
    close_periods(engine, datetime(2025, 5, 10, tzinfo=UTC), now=datetime(2025, 5, 10,
                                                                           tzinfo=UTC))
    expected = [i["lago_id"] for i in cli_json("invoices", "list")["invoices"]]
    built: list[int] = []
    objects = documents.invoice_objects
    monkeypatch.setattr(documents, "invoice_objects",
                        lambda conn, rows: built.append(len(rows)) or objects(conn, rows))
    second = client.get("/api/v1/invoices", params={"per_page": 1, "page": 2}).json()
    assert [i["lago_id"] for i in second["invoices"]] == [expected[1]]
    assert built == [1]
    assert second["meta"] == {"current_page": 2, "next_page": 3 if len(expected) > 2 else None,
                              "prev_page": 1, "total_pages": len(expected),
                              "total_count": len(expected)}
    past = client.get("/api/v1/invoices", params={"per_page": 1, "page": 99}).json()
    assert past["invoices"] == []
    assert past["meta"]["total_count"] == len(expected) and past["meta"]["next_page"] is None


def test_integers_beyond_64_bits_are_answered_as_strings_not_a_text_500() -> None:
    """A usage at the number rule's bound (docs/architecture.md §7) has cents beyond 64 bits:
    answered as JSON, the digits as a string that no client's JSON reader rounds."""
    from decimal import Decimal

    from tallyflow.api.lago import LagoJSON

    body = {"amount_cents": 10**24, "events_count": 2**63 - 1, "units": Decimal("1E+24"),
            "fees": [{"amount_cents": -(2**64)}]}
    answer = LagoJSON(body)
    assert answer.media_type == "application/json"
    assert json.loads(answer.body) == {
        "amount_cents": str(10**24), "events_count": 2**63 - 1, "units": 1e24,
        "fees": [{"amount_cents": str(-(2**64))}]}
