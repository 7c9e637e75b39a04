"""``GET /api/v1/tallyflow/customers/{id}/balance``: the running balance over HTTP (a key
holder only; an unknown customer is Lago's ``customer_not_found``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

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


def test_a_balance_is_served_from_the_cache_for_at_most_its_ttl(
    engine: Engine, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """docs/architecture.md §22: an answer is reused for ``balance_cache_seconds`` (then read
    again), and with 0 every read goes to the database."""
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    cached, uncached = make_client(balance_cache_seconds=1.0), make_client(balance_cache_seconds=0)
    path = "/api/v1/tallyflow/customers/c/balance"
    first = cached.get(path).json()["balance"]
    assert uncached.get(path).json()["balance"] == first and first["ongoing_usage_cents"] > 0
    read_at = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("delete from running_usage"))
    again = cached.get(path).json()["balance"]
    assert time.monotonic() - read_at < 1.0 and again == first  # within the TTL: the cache
    assert uncached.get(path).json()["balance"]["ongoing_usage_cents"] == 0
    time.sleep(1.0)
    assert cached.get(path).json()["balance"]["ongoing_usage_cents"] == 0
