"""Writes the Lago way (issue 28): a customer POST sets only the keys sent, plans and wallets
POST create and PUT change only the keys sent, a subscription POST of an existing external_id
is Lago's plan change, a charge names its metric by the metric's ``lago_id`` and its own ids
come back and round-trip. Each case cites the Lago spec it follows."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.tasks.catalog import apply_catalog
from tests.tasks.rating_fixtures import MISTRAL

DOCS = {p.stem: json.loads(p.read_text()) for p in Path(MISTRAL).glob("*.json")}
PATHS = {"billable_metric": "billable_metrics", "plan": "plans", "customer": "customers",
         "subscription": "subscriptions", "wallet": "wallets"}


def post(client: TestClient, kind: str, document: dict[str, Any], status: int = 200) -> Any:
    answer = client.post(f"/api/v1/{PATHS[kind]}", json={kind: document})
    assert answer.status_code == status, answer.text
    return answer.json()


def create(client: TestClient, *kinds: str) -> dict[str, Any]:
    return {kind: post(client, kind, DOCS[kind][kind])[kind] for kind in kinds}


def test_customer_post_sets_only_the_keys_sent(client: TestClient) -> None:
    """Lago: spec/services/customers/upsert_from_api_service_spec.rb (an existing customer:
    only the attributes present change)."""
    post(client, "customer", {**DOCS["customer"]["customer"], "net_payment_term": 30,
                              "shipping_address": {"city": "Paris", "zipcode": "75001"}})
    renamed = post(client, "customer", {"external_id": "acme", "name": "Acme Corp",
                                        "shipping_address": {"city": "Lyon"}})["customer"]
    assert (renamed["name"], renamed["email"], renamed["timezone"], renamed["currency"],
            renamed["net_payment_term"]) == (
        "Acme Corp", "billing@acme.example", "America/New_York", "USD", 30)
    assert renamed["shipping_address"] == {  # Lago's other address keys, unset: null
        "city": "Lyon", "zipcode": "75001", "address_line1": None, "address_line2": None,
        "country": None, "state": None}
    assert client.get("/api/v1/customers/acme").json()["customer"] == renamed


def test_plans_and_wallets_post_create_once_and_put_changes_only_the_keys_sent(
    client: TestClient,
) -> None:
    """Lago: spec/requests/api/v1/plans_controller_spec.rb and wallets_controller_spec.rb
    (create with a code in use: 422 value_already_exist; update: the params given)."""
    created = create(client, "billable_metric", "plan", "customer", "wallet")
    again = post(client, "plan", DOCS["plan"]["plan"], 422)
    assert again == {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                     "error_details": {"code": ["value_already_exist"]}}
    wallet = post(client, "wallet",
                  {**DOCS["wallet"]["wallet"], "code": created["wallet"]["code"]}, 422)
    assert wallet["error_details"] == {"code": ["value_already_exist"]}

    plan = client.put("/api/v1/plans/mistral_per_token",
                      json={"plan": {"description": "per 1M tokens"}}).json()["plan"]
    assert plan["description"] == "per 1M tokens" and plan["name"] == "Mistral per-token"
    assert [c["lago_id"] for c in plan["charges"]] == [
        c["lago_id"] for c in created["plan"]["charges"]]  # the charges did not change
    lago_id = created["wallet"]["lago_id"]
    renamed = client.put(f"/api/v1/wallets/{lago_id}", json={"wallet": {"name": "Credits"}})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["wallet"]["name"], renamed.json()["wallet"]["rate_amount"]) == (
        "Credits", created["wallet"]["rate_amount"])


def test_a_charge_names_its_metric_by_lago_id_and_its_ids_round_trip(
    client: TestClient, engine: Engine
) -> None:
    """Lago: app/serializers/v1/charge_serializer.rb (lago_id, lago_billable_metric_id,
    billable_metric_code) and spec/services/plans/create_service_spec.rb (billable_metric_id
    is the metric's id), as the Python SDK's template posts it."""
    metric = create(client, "billable_metric")["billable_metric"]
    plan = copy.deepcopy(DOCS["plan"]["plan"])
    plan["charges"][0]["billable_metric_id"] = metric["lago_id"]
    answered = post(client, "plan", plan)["plan"]
    [charge] = answered["charges"]
    assert charge["lago_id"].isdigit()
    assert (charge["lago_billable_metric_id"], charge["billable_metric_code"]) == (
        metric["lago_id"], "mistral_tokens")
    # the answer sent back (as an SDK does after a GET) changes nothing, ids included
    back = client.put("/api/v1/plans/mistral_per_token", json={"plan": answered})
    assert back.status_code == 200, back.text
    assert back.json()["plan"]["charges"][0]["lago_id"] == charge["lago_id"]
    listed = client.get("/api/v1/plans").json()["plans"]
    assert listed[0]["charges"][0]["lago_id"] == charge["lago_id"]
    # stored as the file names it: applying the example files changes nothing
    result = apply_catalog(engine, [MISTRAL / "billable_metric.json", MISTRAL / "plan.json"])
    assert result.ok and not result.changed, result.to_dict()
    unknown = copy.deepcopy(plan)
    unknown.update(code="other", name="Other")
    unknown["charges"][0]["billable_metric_id"] = "999999"
    missing = post(client, "plan", unknown, 404)
    assert missing["code"] == "billable_metric_not_found"


def test_subscription_post_of_an_existing_external_id_is_lagos_plan_change(
    client: TestClient,
) -> None:
    """Lago: spec/services/subscriptions/create_service_spec.rb ("when subscription is
    upgraded", "when a subscription already exists" with the same plan, and an external_id
    of another customer: value_already_exist)."""
    create(client, "billable_metric", "plan", "customer", "subscription")
    pro = {**DOCS["plan"]["plan"], "code": "pro", "name": "Pro", "amount_cents": 10_000}
    post(client, "plan", pro)
    subscription = DOCS["subscription"]["subscription"]
    same = post(client, "subscription", subscription)["subscription"]
    assert same["plan_code"] == "mistral_per_token"
    upgraded = post(client, "subscription", {**subscription, "plan_code": "pro"})
    assert (upgraded["subscription"]["plan_code"], upgraded["subscription"]["status"]) == (
        "pro", "active")
    for _ in range(2):  # a downgrade waits for the period end; its retry changes nothing
        waits = post(client, "subscription", subscription)["subscription"]
        assert (waits["plan_code"], waits["status"]) == ("pro", "active")
    listed = client.get("/api/v1/subscriptions", params={"status[]": "pending"}).json()
    assert [s["plan_code"] for s in listed["subscriptions"]] == ["mistral_per_token"]
    renamed = post(client, "subscription", {**subscription, "plan_code": "pro", "name": "x"},
                   422)
    assert renamed["error_details"] == {"name": ["cannot_be_changed"]}
    post(client, "customer", {"external_id": "other", "currency": "USD"})
    taken = post(client, "subscription", {**subscription, "external_customer_id": "other"},
                 422)
    assert taken["error_details"] == {"external_id": ["value_already_exist"]}
    gone = post(client, "subscription", {**subscription, "plan_code": "nope"}, 404)
    assert gone["code"] == "plan_not_found"
    later = {**subscription, "external_id": "sub_later", "subscription_at": "2999-01-01T00:00:00Z"}
    post(client, "subscription", later)
    assert client.delete("/api/v1/subscriptions/sub_later").status_code == 200  # canceled
    same = post(client, "subscription", later, 422)  # the same document: apply would keep it
    assert same["error_details"] == {"external_id": ["value_already_exist"]}
    later["subscription_at"] = "2998-01-01T00:00:00Z"
    again = post(client, "subscription", later)["subscription"]  # subscribed again
    assert (again["status"], again["canceled_at"]) == ("pending", None)
    assert client.delete(f"/api/v1/subscriptions/{subscription['external_id']}",
                         params={"on_termination_invoice": "skip"}).status_code == 200
    ended = post(client, "subscription", {**subscription, "plan_code": "pro"}, 422)
    assert ended["error_details"] == {"external_id": ["value_already_exist"]}


# (kind, fields changed in the example, field, Lago's code, the Lago spec of the case)
REFUSALS = [
    ("billable_metric", {"name": None}, "name", "value_is_mandatory",
     "spec/requests/api/v1/billable_metrics_controller_spec.rb"),
    ("billable_metric", {"aggregation_type": "median_agg"}, "aggregation_type",
     "value_is_invalid", "spec/services/billable_metrics/create_service_spec.rb"),
    ("billable_metric", {"rounding_function": "round", "rounding_precision": 10**30},
     "billable_metric", "value_is_invalid", "a number past its column: not a 500"),
    ("customer", {"currency": "XXY"}, "currency", "invalid_currency",
     "spec/services/customers/upsert_from_api_service_spec.rb"),
    ("customer", {"colour": "red"}, "colour", "unknown_field", "Tallyflow: never ignored"),
    ("customer", {"billing_configuration": {"payment_provider": "stripe"}},
     "billing_configuration", "not_supported", "Tallyflow: refused by name"),
    ("subscription", {"subscription_at": "hello"}, "subscription_at", "invalid_date",
     "spec/requests/api/v1/subscriptions_controller_spec.rb (invalid subscription_at)"),
    ("plan", {"amount_cents": "ten"}, "amount_cents", "invalid_type",
     "spec/requests/api/v1/plans_controller_spec.rb"),
]


def test_refused_documents_answer_lagos_codes_and_the_reason_beside(client: TestClient) -> None:
    create(client, "billable_metric", "plan", "customer")
    for kind, changes, field, code, spec in REFUSALS:
        key = "external_id" if kind in ("customer", "subscription") else "code"
        document = {**DOCS[kind][kind], key: f"new_{kind}", **changes}
        refused = post(client, kind, {k: v for k, v in document.items() if v is not None}, 422)
        assert refused["error_details"] == {field: [code]}, (spec, refused)
        assert refused["tallyflow_messages"][field][0], spec  # apply's sentence
