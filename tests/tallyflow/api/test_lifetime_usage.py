"""``GET``/``PUT /api/v1/subscriptions/{external_id}/lifetime_usage`` as Lago answers them
(lago-api spec/requests/api/v1/subscriptions/lifetime_usages_controller_spec.rb), driven by
Lago's own Python client (``subscriptions.lifetime_usage``, ``update_lifetime_usage``), and a
plan's ``usage_thresholds`` through ``/plans``; 422 by field, 404."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from sqlalchemy import Engine

from tests.tallyflow.api.conftest import LiveApi
from tests.tasks.invoicing.test_invoicing import catalog

SUB = "sub_acme_001"
BASE = f"/api/v1/subscriptions/{SUB}/lifetime_usage"
THRESHOLDS = [{"amount_cents": 500, "threshold_display_name": "first"},
              {"amount_cents": 1000, "recurring": True}]


def test_lifetime_usage_with_lagos_client(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"usage_thresholds": THRESHOLDS}, wallet=False)
    client = Client(api_key=api_key, api_url=f"{live_api().url}/")
    usage = client.subscriptions.lifetime_usage(SUB)
    assert usage is not None and usage.external_subscription_id == SUB
    assert (usage.external_historical_usage_amount_cents, usage.invoiced_usage_amount_cents,
            usage.current_usage_amount_cents) == (0, 0, 0)
    changed = client.subscriptions.update_lifetime_usage(SUB, 750)
    assert changed is not None and changed.external_historical_usage_amount_cents == 750
    thresholds = changed.usage_thresholds or []
    assert [(t.amount_cents, t.completion_ratio) for t in thresholds] == [
        (500, 1.0), (1500, 0.25)]
    assert thresholds[0].reached_at is not None and thresholds[1].reached_at is None
    with pytest.raises(LagoApiError) as missing:
        client.subscriptions.lifetime_usage("nobody")
    assert missing.value.status_code == 404


def test_lifetime_usage_refusals_and_plan_shape(client: TestClient, engine: Engine,
                                                tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"usage_thresholds": THRESHOLDS}, wallet=False)
    for body, field in [
        ({"lifetime_usage": {"external_historical_usage_amount_cents": -1}},
         "external_historical_usage_amount_cents"),
        ({"lifetime_usage": {"external_historical_usage_amount_cents": "12"}},
         "external_historical_usage_amount_cents"),
        ({"lifetime_usage": {"external_historical_usage_amount_cents": 1, "other": 2}},
         "other"),
    ]:
        answer = client.put(BASE, json=body)
        assert answer.status_code == 422 and field in answer.json()["error_details"], body
    assert client.put(BASE, json={"x": 1}).status_code == 422
    assert client.put("/api/v1/subscriptions/nobody/lifetime_usage", json={
        "lifetime_usage": {"external_historical_usage_amount_cents": 1}}).status_code == 404
    plan = client.get("/api/v1/plans/mistral_per_token").json()["plan"]
    assert [t["amount_cents"] for t in plan["usage_thresholds"]] == [500, 1000]
