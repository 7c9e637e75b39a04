"""``/api/v1/subscriptions/{external_id}/alerts`` as Lago answers it (lago-api
spec/requests/api/v1/subscriptions/alerts_controller_spec.rb): create, list, get, update,
delete; 422 ``validation_errors`` by field (lifetime usage per metric in units refused by
name), 404."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import UsageAlert
from tests.tasks.invoicing.test_invoicing import catalog

BASE = "/api/v1/subscriptions/sub_acme_001/alerts"


def test_alerts_crud(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, wallet=False)
    created = client.post(BASE, json={"alert": {
        "alert_type": "billable_metric_current_usage_amount", "code": "tokens",
        "name": "Tokens", "billable_metric_code": "mistral_tokens",
        "thresholds": [{"code": "warn", "value": 1000}, {"value": 500, "recurring": True}]}})
    assert created.status_code == 200, created.text
    alert = created.json()["alert"]
    assert alert["alert_type"] == "billable_metric_current_usage_amount"
    assert alert["billable_metric"]["code"] == "mistral_tokens"
    assert alert["thresholds"] == [{"code": "warn", "value": "1000", "recurring": False},
                                   {"code": None, "value": "500", "recurring": True}]
    assert alert["previous_value"] == "0" and alert["direction"] == "increasing"
    assert mismatches(alert, UsageAlert) == []
    assert client.get(BASE).json()["alerts"] == [alert]
    assert client.get(f"{BASE}/tokens").json()["alert"] == alert
    changed = client.put(f"{BASE}/tokens", json={"alert": {
        "name": "T", "thresholds": [{"value": 10}]}}).json()["alert"]
    assert changed["name"] == "T" and [t["value"] for t in changed["thresholds"]] == ["10"]
    again = client.post(BASE, json={"alert": {
        "alert_type": "billable_metric_current_usage_amount", "code": "tokens",
        "billable_metric_code": "mistral_tokens", "thresholds": [{"value": 1}]}})
    assert again.status_code == 422 and again.json()["error_details"] == {
        "code": ["value_already_exist"]}
    assert client.delete(f"{BASE}/tokens").status_code == 200
    gone = client.get(f"{BASE}/tokens")
    assert gone.status_code == 404 and gone.json()["code"] == "alert_not_found"


def test_refusals(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, wallet=False)
    lifetime = client.post(BASE, json={"alert": {
        "alert_type": "billable_metric_lifetime_usage_units", "code": "l",
        "billable_metric_code": "mistral_tokens", "thresholds": [{"value": 1}]}})
    assert lifetime.status_code == 422
    assert lifetime.json()["error_details"] == {
        "alert_type": ["unsupported_alert_type:billable_metric_lifetime_usage_units"]}
    unknown = client.post("/api/v1/subscriptions/nope/alerts", json={"alert": {
        "alert_type": "current_usage_amount", "code": "c", "thresholds": [{"value": 1}]}})
    assert unknown.status_code == 404 and unknown.json()["code"] == "subscription_not_found"
