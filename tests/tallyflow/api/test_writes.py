"""Catalog writes: the rules and the all-or-nothing apply of `tallyflow apply`, Lago's 422s,
PUT as a merge, DELETE plan (soft) and DELETE wallet (terminate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.tasks.catalog import apply_catalog, export_catalog
from tests.tasks.rating_fixtures import MISTRAL

DOCS = {p.stem: json.loads(p.read_text()) for p in Path(MISTRAL).glob("*.json")}
PATHS = {"billable_metric": "billable_metrics", "plan": "plans", "customer": "customers",
         "subscription": "subscriptions", "wallet": "wallets"}
ORDER = ["billable_metric", "plan", "customer", "subscription", "wallet"]


def create_mistral(client: TestClient) -> dict[str, Any]:
    created = {}
    for kind in ORDER:
        answer = client.post(f"/api/v1/{PATHS[kind]}", json=DOCS[kind])
        assert answer.status_code == 200, (kind, answer.text)
        created[kind] = answer.json()[kind]
    return created


def test_the_mistral_catalog_through_the_api_is_what_apply_makes(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    created = create_mistral(client)
    assert created["wallet"]["credits_balance"] == "25.00000"  # opened, as apply does
    assert [next(iter(e)) for e in export_catalog(engine)] == ORDER
    # the same documents as the files: applying the files on top changes nothing
    result = apply_catalog(engine, [MISTRAL])
    assert result.ok and not result.changed, result.to_dict()


@pytest.mark.parametrize("path, body, details", [
    ("billable_metrics", {"billable_metric": {**DOCS["billable_metric"]["billable_metric"],
                                              "aggregation_type": "median_agg"}},
     "aggregation_type"),
    ("billable_metrics", {"billable_metric": {**DOCS["billable_metric"]["billable_metric"],
                                              "colour": "red"}}, "colour"),
    ("plans", {"plan": {**DOCS["plan"]["plan"], "interval": "hourly"}}, "interval"),
    ("customers", {"customer": {**DOCS["customer"]["customer"], "timezone": "Mars/Base"}},
     "timezone"),
])
def test_invalid_documents_get_422_and_change_nothing(
    client: TestClient, engine: Engine, path: str, body: dict[str, Any], details: str
) -> None:
    if path == "subscriptions":
        for kind in ("billable_metric", "plan", "customer"):
            client.post(f"/api/v1/{PATHS[kind]}", json=DOCS[kind])
    before = export_catalog(engine)
    answer = client.post(f"/api/v1/{path}", json=body)
    assert answer.status_code == 422, answer.text
    got = answer.json()
    assert got["code"] == "validation_errors"
    assert any(details in key for key in got["error_details"]), got
    assert export_catalog(engine) == before


def test_an_unknown_plan_is_lagos_404(client: TestClient, engine: Engine) -> None:
    """Lago: spec/requests/api/v1/subscriptions_controller_spec.rb ("with invalid plan
    code": 404)."""
    for kind in ("billable_metric", "plan", "customer"):
        client.post(f"/api/v1/{PATHS[kind]}", json=DOCS[kind])
    before = export_catalog(engine)
    answer = client.post("/api/v1/subscriptions", json={"subscription": {
        **DOCS["subscription"]["subscription"], "plan_code": "nope"}})
    assert answer.status_code == 404, answer.text
    assert {k: v for k, v in answer.json().items() if k != "tallyflow_messages"} == {
        "status": 404, "error": "Not Found", "code": "plan_not_found"}
    assert export_catalog(engine) == before


def test_post_of_an_existing_key_put_merges_and_404s(client: TestClient, engine: Engine) -> None:
    create_mistral(client)
    again = client.post("/api/v1/billable_metrics", json=DOCS["billable_metric"])
    assert again.status_code == 422
    assert again.json()["error_details"] == {"code": ["value_already_exist"]}
    customer = client.post("/api/v1/customers", json={"customer": {
        **DOCS["customer"]["customer"], "name": "Acme Corp"}})  # Lago's POST upserts customers
    assert customer.status_code == 200 and customer.json()["customer"]["name"] == "Acme Corp"

    renamed = client.put("/api/v1/billable_metrics/mistral_tokens",
                         json={"billable_metric": {"name": "Tokens"}})
    assert renamed.status_code == 200, renamed.text
    metric = renamed.json()["billable_metric"]
    assert metric["name"] == "Tokens" and metric["aggregation_type"] == "sum_agg"
    assert client.put("/api/v1/billable_metrics/mistral_tokens",
                      json={"billable_metric": {"code": "other"}}).status_code == 422
    missing = client.put("/api/v1/plans/nope", json={"plan": {"name": "x"}})
    assert missing.status_code == 404 and missing.json()["code"] == "plan_not_found"
    assert client.post("/api/v1/taxes", json={"tax": {
        "code": "vat", "name": "VAT", "rate": "20"}}).status_code == 200
    assert client.get("/api/v1/taxes/vat").json()["tax"]["rate"] == 20


def test_delete_plan_is_soft_and_refused_while_subscribed(client: TestClient,
                                                           engine: Engine) -> None:
    create_mistral(client)
    busy = client.delete("/api/v1/plans/mistral_per_token")
    assert busy.status_code == 422
    assert busy.json()["error_details"] == {"plan": ["has_active_subscriptions"]}
    spare = {**DOCS["plan"]["plan"], "code": "spare", "name": "Spare"}
    assert client.post("/api/v1/plans", json={"plan": spare}).status_code == 200
    gone = client.delete("/api/v1/plans/spare")
    assert gone.status_code == 200 and gone.json()["plan"]["deleted_at"]
    assert client.get("/api/v1/plans/spare").status_code == 404
    assert [p["code"] for p in client.get("/api/v1/plans").json()["plans"]] == [
        "mistral_per_token"]
    with engine.connect() as conn:  # kept, for what refers to it
        assert conn.execute(text("select count(*) from plans")).scalar_one() == 2
    refused = client.post("/api/v1/subscriptions", json={"subscription": {
        **DOCS["subscription"]["subscription"], "external_id": "sub_2", "plan_code": "spare"}})
    assert refused.status_code == 404  # as an unknown plan (Lago's Plan.parents.find_by)
    assert refused.json()["code"] == "plan_not_found"


def test_delete_wallet_terminates_and_voids_the_rest(client: TestClient, engine: Engine) -> None:
    created = create_mistral(client)
    lago_id = created["wallet"]["lago_id"]
    ended = client.delete(f"/api/v1/wallets/{lago_id}")
    assert ended.status_code == 200, ended.text
    wallet = ended.json()["wallet"]
    assert wallet["status"] == "terminated" and wallet["credits_balance"] == "0.00000"
    assert wallet["terminated_at"]
    top_up = client.post("/api/v1/wallet_transactions", json={"wallet_transaction": {
        "wallet_id": lago_id, "granted_credits": "1"}})
    assert top_up.status_code == 422
    renamed = client.put(f"/api/v1/wallets/{lago_id}", json={"wallet": {"code": "x"}})
    assert renamed.status_code == 422


def test_delete_subscription_terminates_it_as_lago_does(client: TestClient,
                                                      engine: Engine) -> None:
    create_mistral(client)
    assert client.delete("/api/v1/subscriptions/nope").status_code == 404
    bad = client.delete("/api/v1/subscriptions/sub_acme_001",
                        params={"on_termination_invoice": "later"})
    assert bad.status_code == 422
    bad = client.delete("/api/v1/subscriptions/sub_acme_001",
                        params={"on_termination_credit_note": "void"})
    assert bad.json()["error_details"] == {"on_termination_credit_note": ["value_is_invalid"]}
    # offset is Lago's too (a plan in arrears has no fee to credit: no note)
    ended = client.delete("/api/v1/subscriptions/sub_acme_001",
                          params={"on_termination_invoice": "skip",
                                  "on_termination_credit_note": "offset"})
    assert ended.status_code == 200, ended.text
    subscription = ended.json()["subscription"]
    assert subscription["status"] == "terminated" and subscription["terminated_at"]
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from invoices")).scalar_one() == 0  # skip
    again = client.delete("/api/v1/subscriptions/sub_acme_001")
    assert again.status_code == 422  # already terminated at another time
    assert client.get("/api/v1/subscriptions/sub_acme_001").json()["subscription"][
        "status"] == "terminated"


def test_delete_of_a_pending_subscription_cancels_it(client: TestClient) -> None:
    for kind in ORDER[:3]:
        assert client.post(f"/api/v1/{PATHS[kind]}", json=DOCS[kind]).status_code == 200
    later = json.loads(json.dumps(DOCS["subscription"]))
    later["subscription"]["subscription_at"] = "2999-01-01T00:00:00Z"
    assert client.post("/api/v1/subscriptions", json=later).status_code == 200
    bad = client.delete("/api/v1/subscriptions/sub_acme_001", params={"status": "gone"})
    assert bad.status_code == 422
    canceled = client.delete("/api/v1/subscriptions/sub_acme_001", params={"status": "pending"})
    assert canceled.status_code == 200, canceled.text
    subscription = canceled.json()["subscription"]
    assert (subscription["status"], subscription["terminated_at"]) == ("canceled", None)
    assert subscription["canceled_at"]


def test_get_subscription_shows_the_row_in_force_while_a_downgrade_waits(
    client: TestClient, engine: Engine
) -> None:
    from tallyflow.tasks.subscriptions import change_plan

    create_mistral(client)
    for code, cents in (("pro", 10_000), ("basic", 100)):
        plan = json.loads(json.dumps(DOCS["plan"]))
        plan["plan"].update({"code": code, "name": code, "amount_cents": cents})
        assert client.post("/api/v1/plans", json=plan).status_code == 200
    assert change_plan(engine, "sub_acme_001", "pro").kind == "upgrade"
    assert change_plan(engine, "sub_acme_001", "basic").kind == "downgrade"  # waits
    shown = client.get("/api/v1/subscriptions/sub_acme_001").json()["subscription"]
    assert (shown["plan_code"], shown["status"]) == ("pro", "active")
