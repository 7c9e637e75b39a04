"""Backpressure of POST /api/v1/events and /events/batch (tallyflow/api/intake.py): a bounded
intake and a per-key rate answer 429 with ``Retry-After`` instead of letting clients time out,
and a refused or retried request ends stored once.

Lago's 429 body shape: app/controllers/concerns/api_errors.rb (too_many_provider_requests_error);
its batch limit of 100: app/services/events/create_batch_service.rb.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tallyflow.api.intake import InflightLimit, Intake, RateLimiter, TooManyRequests
from tallyflow.api.keys import create_key
from tests.tallyflow.api.conftest import wait_for
from tests.tallyflow.api.test_events import event

EVENTS = "select count(*) from events"
DISTINCT = "select count(distinct transaction_id) from events"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("rate", "steps", "expected"), [
    # (advance seconds, events) -> accepted, or the Retry-After of the 429
    (100.0, [(0, 100), (0, 1)], [True, 1]),  # burst spent: wait for one token, a whole second
    (100.0, [(0, 100), (0.5, 50), (0, 1)], [True, True, 1]),  # refilled at the rate
    (1000.0, [(0, 1000), (0, 100), (0.1, 100)], [True, 1, True]),  # burst = one second's worth
    (10.0, [(0, 100), (0, 100)], [True, 10]),  # a slow key waits 10 s for a batch
], ids=["burst-spent", "refill", "burst-is-a-second", "slow-key"])
def test_the_token_bucket(rate: float, steps: list[tuple[float, int]],
                          expected: list[Any]) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, clock)
    for (advance, events), want in zip(steps, expected, strict=True):
        clock.now += advance
        if want is True:
            limiter.take("k", events)
        else:
            with pytest.raises(TooManyRequests) as refused:
                limiter.take("k", events)
            assert refused.value.retry_after == want
    limiter.take("other", 100)  # each key has its own bucket


def test_the_intake_bound_and_a_lone_oversized_request() -> None:
    intake = Intake(10)
    intake.take(150)  # alone: let in (a batch larger than the bound must pass some time)
    with pytest.raises(TooManyRequests):
        intake.take(1)
    intake.give_back(150)
    intake.take(6)
    with pytest.raises(TooManyRequests):
        intake.take(5)
    intake.take(4)
    assert (intake.pending, intake.refused) == (10, 2)


def _block_loader(client: TestClient) -> threading.Event:
    """The loader waits for the returned event before each load: the intake stays full."""
    loader = client.app.state.pipeline.loader  # type: ignore[attr-defined]
    go, load = threading.Event(), loader.load

    def blocked(refs: Any) -> None:
        go.wait(30)
        load(refs)

    loader.load = blocked
    return go


def _drained(client: TestClient) -> None:
    """Wait until the loader has counted everything out of the intake (a bound of one batch)."""
    intake = client.app.state.pipeline.intake  # type: ignore[attr-defined]
    for _ in range(3000):
        if not intake.pending:
            return
        threading.Event().wait(0.01)


def test_a_full_intake_answers_429_with_retry_after_and_the_retry_is_stored_once(
    make_client: Callable[..., TestClient], engine: Engine
) -> None:
    client = make_client(max_pending=100)
    go = _block_loader(client)
    first = {"events": [event(f"a{i}") for i in range(100)]}
    second = {"events": [event(f"b{i}") for i in range(100)]}
    assert client.post("/api/v1/events/batch", json=first).status_code == 200
    for path, body in (("/api/v1/events/batch", second),
                       ("/api/v1/events", {"event": event("single")})):
        refused = client.post(path, json=body)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json() == {"status": 429, "error": "Too Many Requests",
                                  "code": "too_many_requests",
                                  "error_details": {"events": ["intake_full"]}}
    status = client.get("/api/v1/tallyflow/status").json()
    assert status["intake"] == {"pending": 100, "max_pending": 100, "refused": 2,
                                "inflight": 0, "refused_inflight": 0, "rate_limited": 0}
    assert status["events_received"] == 100 and status["objects_written"] == 1
    go.set()  # the consumer catches up; the client retries after Retry-After
    assert wait_for(engine, EVENTS, 100) == 100
    _drained(client)
    assert client.post("/api/v1/events/batch", json=second).status_code == 200
    _drained(client)
    assert client.post("/api/v1/events/batch", json=first).status_code == 200  # timed-out retry
    assert wait_for(engine, "select coalesce(sum(duplicates), 0) from ingest_objects", 100) == 100
    assert wait_for(engine, EVENTS, 200) == 200
    assert wait_for(engine, DISTINCT, 200) == 200


def test_the_rate_limit_is_per_key(make_client: Callable[..., TestClient],
                                   engine: Engine) -> None:
    client = make_client(rate_limit=1.0)  # 100 at once, then one a second
    other = {"Authorization": f"Bearer {create_key(engine, 'other')[0]}"}
    batch = {"events": [event(f"r{i}") for i in range(100)]}
    assert client.post("/api/v1/events/batch", json=batch).status_code == 200
    refused = client.post("/api/v1/events", json={"event": event("late")})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error_details"] == {"api_key": ["rate_limit_exceeded"]}
    assert client.post("/api/v1/events", json={"event": event("other")},
                       headers=other).status_code == 200
    assert client.get("/api/v1/tallyflow/status").json()["intake"]["rate_limited"] == 1
    assert wait_for(engine, EVENTS, 101) == 101


def test_past_the_inflight_bound_an_event_request_gets_429_before_its_body_is_read() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def blocked(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await release.wait()

    async def call(limit: InflightLimit, path: str, method: str = "POST") -> list[Any]:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": method, "path": path, "headers": []}
        await limit(scope, receive, send)
        return sent

    async def scenario() -> None:
        counts = Intake(10)
        limit = InflightLimit(blocked, 1, counts)
        first = asyncio.create_task(call(limit, "/api/v1/events/batch"))
        await asyncio.sleep(0)
        start, body = await call(limit, "/api/v1/events")
        assert start["status"] == 429 and (b"retry-after", b"1") in start["headers"]
        assert json.loads(body["body"])["error_details"] == {
            "events": ["too_many_requests_in_flight"]}
        other = asyncio.create_task(call(limit, "/api/v1/customers", "GET"))  # not counted
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, other)
        assert (counts.inflight, counts.refused_inflight) == (0, 1)
        assert seen == ["/api/v1/events/batch", "/api/v1/customers"]

    asyncio.run(scenario())
