"""Events the API refuses (422) are announced as ``event.error`` webhooks (lago-api
spec/services/webhooks/events/error_service_spec.rb, ``V1::EventErrorSerializer``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.tasks.webhooks import add_endpoint


def _bodies(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(b) for b in conn.execute(text("select body from webhooks"
                                                         " order by id")).scalars()]


def test_refused_api_events_are_announced(engine: Engine, client: TestClient) -> None:
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks",
                          "event_types": ["event.error"]})
    bad = {"transaction_id": "t1", "external_subscription_id": "s1"}  # no code
    assert client.post("/api/v1/events", json={"event": bad}).status_code == 422
    good = {**bad, "transaction_id": "t2", "code": "tokens"}
    assert client.post("/api/v1/events/batch",
                       json={"events": [good, {**bad, "transaction_id": "t3"}]}
                       ).status_code == 422
    errors = _bodies(engine)
    assert [e["event_error"]["event"]["transaction_id"] for e in errors] == ["t1", "t3"]
    assert all(e["webhook_type"] == "event.error" and e["event_error"]["status"] == 422
               for e in errors)
    assert "code" in errors[0]["event_error"]["message"]
