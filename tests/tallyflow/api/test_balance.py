"""``GET /api/v1/tallyflow/customers/{id}/balance``: the running balance over HTTP (a key
holder only; an unknown customer is Lago's ``customer_not_found``)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.tasks import wallets as w
from tests.tasks.wallets.test_balance import FEB, _seeded


def test_the_balance_endpoint_answers_allowed(
    engine: Engine, client: TestClient, tmp_path: Path
) -> None:
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    answer = client.get("/api/v1/tallyflow/customers/c/balance")
    assert answer.status_code == 200
    balance = answer.json()["balance"]
    # no wallet: nothing covers the usage so far
    assert balance["ongoing_usage_cents"] > 0 and balance["balance_cents"] == 0
    assert balance["ongoing_balance_cents"] == -balance["ongoing_usage_cents"]
    assert balance["allowed"] is False and balance["overdraft_cents"] == 0
    missing = client.get("/api/v1/tallyflow/customers/nobody/balance")
    assert missing.status_code == 404 and missing.json()["code"] == "customer_not_found"
    nobody = client.get("/api/v1/tallyflow/customers/c/balance",
                        headers={"Authorization": "Bearer nope"})
    assert nobody.status_code == 401
