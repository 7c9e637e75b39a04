"""``/api/v1/webhook_endpoints`` as Lago answers it (lago-api
spec/requests/api/v1/webhook_endpoints_controller_spec.rb): create, list (paged), get,
update, delete; 422 ``validation_errors`` by field, 404 ``webhook_endpoint_not_found``."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import WebhookEndpoint


def test_webhook_endpoints_crud(client: TestClient) -> None:
    created = client.post("/api/v1/webhook_endpoints", json={"webhook_endpoint": {
        "webhook_url": "https://erp.example.com/hooks", "name": "erp",
        "event_types": ["invoice.created"]}})
    assert created.status_code == 200, created.text
    endpoint = created.json()["webhook_endpoint"]
    assert set(endpoint) == {"lago_id", "lago_organization_id", "webhook_url",
                             "signature_algo", "name", "event_types", "created_at"}
    assert endpoint["signature_algo"] == "hmac" and endpoint["lago_organization_id"]
    assert mismatches(endpoint, WebhookEndpoint) == []
    lago_id = endpoint["lago_id"]
    listed = client.get("/api/v1/webhook_endpoints", params={"per_page": 1}).json()
    assert [e["lago_id"] for e in listed["webhook_endpoints"]] == [lago_id]
    assert listed["meta"]["total_count"] == 1
    assert client.get(f"/api/v1/webhook_endpoints/{lago_id}").json()["webhook_endpoint"] \
        == endpoint
    changed = client.put(f"/api/v1/webhook_endpoints/{lago_id}", json={"webhook_endpoint": {
        "event_types": ["*"]}}).json()["webhook_endpoint"]
    assert changed["event_types"] is None and changed["name"] == "erp"
    assert mismatches(changed, WebhookEndpoint) == []
    deleted = client.delete(f"/api/v1/webhook_endpoints/{lago_id}")
    assert deleted.status_code == 200
    gone = client.get(f"/api/v1/webhook_endpoints/{lago_id}")
    assert gone.status_code == 404 and gone.json()["code"] == "webhook_endpoint_not_found"


def test_refusals_name_the_field(client: TestClient) -> None:
    def refused(fields: dict) -> dict:
        answer = client.post("/api/v1/webhook_endpoints", json={"webhook_endpoint": fields})
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "validation_errors"
        return dict(answer.json()["error_details"])

    assert refused({"webhook_url": "https://a", "signature_algo": "jwt"}) == {
        "signature_algo": ["unsupported_value"]}
    assert refused({"webhook_url": "https://a", "event_types": ["customer.created"]}) == {
        "event_types": ["invalid_types"]}
    assert refused({"name": "no url"}) == {"webhook_url": ["value_is_mandatory"]}
    assert refused({"webhook_url": "https://a", "secret": "x"}) == {
        "secret": ["unknown_field"]}
    assert client.post("/api/v1/webhook_endpoints",
                       json={"webhook_url": "https://a"}).status_code == 422
    assert client.post("/api/v1/webhook_endpoints", json={"webhook_endpoint": {
        "webhook_url": "https://a"}}).status_code == 200
    assert refused({"webhook_url": "https://a"}) == {"webhook_url": ["value_already_exist"]}
    for n in range(9):
        client.post("/api/v1/webhook_endpoints",
                    json={"webhook_endpoint": {"webhook_url": f"https://b{n}"}})
    assert refused({"webhook_url": "https://c"}) == {"base": ["exceeded_limit"]}
