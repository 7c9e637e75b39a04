"""DELETE /api/v1/customers/{external_id}: Lago's soft delete (spec/services/customers/
destroy_service_spec.rb, spec/services/customers/terminate_relations_service_spec.rb)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.tasks.catalog import apply_catalog
from tests.tallyflow.api.test_writes import DOCS, create_mistral
from tests.tasks.rating_fixtures import MISTRAL

CUSTOMER = DOCS["customer"]["customer"]["external_id"]


def test_delete_customer_ends_its_relations_and_hides_it(client: TestClient,
                                                         engine: Engine) -> None:
    created = create_mistral(client)
    assert client.delete("/api/v1/customers/nope").status_code == 404
    gone = client.delete(f"/api/v1/customers/{CUSTOMER}")
    assert gone.status_code == 200, gone.text
    assert gone.json()["customer"]["deleted_at"]
    assert gone.json()["customer"]["external_id"] == CUSTOMER
    # terminate_relations_service_spec: subscriptions terminated, wallets terminated
    sub = DOCS["subscription"]["subscription"]["external_id"]
    assert client.get(f"/api/v1/subscriptions/{sub}").json()["subscription"][
        "status"] == "terminated"
    wallet = client.get(f"/api/v1/wallets/{created['wallet']['lago_id']}").json()["wallet"]
    assert wallet["status"] == "terminated"
    # destroy_service_spec: discarded, not found afterwards, not listed
    assert client.get(f"/api/v1/customers/{CUSTOMER}").status_code == 404
    assert client.get("/api/v1/customers").json()["customers"] == []
    assert client.delete(f"/api/v1/customers/{CUSTOMER}").status_code == 404
    with engine.connect() as conn:  # kept for its ledger
        assert conn.execute(text("select count(*) from customers")).scalar_one() == 1
    again = client.post("/api/v1/customers", json=DOCS["customer"])
    assert again.status_code == 422
    assert again.json()["error_details"] == {"external_id": ["value_already_exist"]}
    assert client.put(f"/api/v1/customers/{CUSTOMER}",
                      json={"customer": {"name": "x"}}).status_code == 404
    # nothing new names it (Lago's customer lookups skip discarded customers)
    for path, kind, change in (("wallets", "wallet", {"code": "w2"}),
                               ("subscriptions", "subscription", {"external_id": "sub_2"})):
        body = {kind: {**DOCS[kind][kind], **change}}
        refused = client.post(f"/api/v1/{path}", json=body)
        assert (refused.status_code, refused.json()["code"]) == (404, "customer_not_found")
    # the catalog files that made it, applied again, leave it deleted
    apply_catalog(engine, [MISTRAL])
    assert client.get(f"/api/v1/customers/{CUSTOMER}").status_code == 404
