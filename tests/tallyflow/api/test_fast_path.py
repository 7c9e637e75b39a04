"""The events posts' fast path (tallyflow/api/routers/events.py, docs/architecture.md §22)
answers exactly as the routes do, and hands every other case to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.tallyflow.api.conftest import wait_for
from tests.tallyflow.api.test_events import event
from tests.tasks.rating_fixtures import apply_mistral

VARYING = ("lago_id", "transaction_id", "created_at", "timestamp")


def _same(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in VARYING}


def _post_all(client: TestClient, tag: str) -> list[Any]:
    client.get("/api/v1/customers")  # the key is checked once, then cached (or not, ttl 0)
    single = client.post("/api/v1/events", json={"event": event(f"{tag}-1", tokens="1.5")})
    batch = client.post(
        "/api/v1/events/batch", json={"events": [event(f"{tag}-{i}", tokens=i) for i in (2, 3)]}
    )
    invalid = client.post("/api/v1/events", json={"event": event(f"{tag}-x", code="")})
    mismatch = client.post(
        "/api/v1/events", json={"event": event(f"{tag}-m", external_customer_id="someone_else")}
    )
    not_json = client.post(
        "/api/v1/events", content=b"{", headers={"content-type": "application/json"}
    )
    answers = [single, batch, invalid, mismatch, not_json]
    return [(a.status_code, a.headers["content-type"], a.json()) for a in answers]


def test_the_fast_path_answers_as_the_routes_do(
    make_client: Callable[..., TestClient], engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    fast, routed = make_client(), make_client(key_cache_seconds=0)
    by_fast, by_route = _post_all(fast, "f"), _post_all(routed, "r")
    assert [a[:2] for a in by_fast] == [a[:2] for a in by_route]
    assert [a[0] for a in by_fast] == [200, 200, 422, 422, 400]
    assert _same(by_fast[0][2]["event"]) == _same(by_route[0][2]["event"])
    assert [_same(e) for e in by_fast[1][2]["events"]] == [
        _same(e) for e in by_route[1][2]["events"]
    ]
    assert by_fast[0][2]["event"]["transaction_id"] == "f-1"
    assert [a[2] for a in by_fast[2:]] == [a[2] for a in by_route[2:]]
    # the two valid posts were answered by the fast path; the faults and the customer to
    # check by the routes; with no cached key, nothing by the fast path
    assert fast.get("/api/v1/tallyflow/status").json()["answered_fast"] == 2
    assert routed.get("/api/v1/tallyflow/status").json()["answered_fast"] == 0
    assert wait_for(engine, "select count(*) from events", 6) == 6


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer tf_wrong"}, {"Authorization": "Basic x"}]
)
def test_a_wrong_key_never_takes_the_fast_path(client: TestClient, headers: dict[str, str]) -> None:
    client.get("/api/v1/customers")
    answer = client.post("/api/v1/events", json={"event": event("w")}, headers=headers)
    assert answer.status_code == 401
    assert client.get("/api/v1/tallyflow/status").json()["answered_fast"] == 0


@pytest.mark.parametrize(
    ("subscription", "transaction"),
    [("sub_1", "t1"), ("", "x"), ("süb €", "tx-ü"), ("a" * 300, "b\x00c")],
)
def test_lago_id_is_the_uuid5_it_always_was(subscription: str, transaction: str) -> None:
    import uuid

    from tallyflow.api.events import _EVENT_IDS, lago_id

    assert lago_id(subscription, transaction) == str(
        uuid.uuid5(_EVENT_IDS, f"{subscription}\x00{transaction}")
    )
