"""POST /api/v1/events and /events/batch: auth, Lago's error shapes, durable objects under
api/YYYY/MM/DD/HH/, and loading through the ingest ledger exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.api.keys import revoke_key
from tallyflow.api.pipeline import GroupCommit, Loader, ObjectWriter, api_source
from tallyflow.tasks.ingest import ObjectRef, ingest_object, register_objects
from tests.tallyflow.api.conftest import settings_for, wait_for
from tests.tasks.rating_fixtures import SUB, apply_mistral

NOW = int(datetime.now(UTC).timestamp())
EVENTS = "select count(*) from events"


def event(txn: str, tokens: Any = 1000, **extra: Any) -> dict[str, Any]:
    return {"transaction_id": txn, "external_subscription_id": SUB, "code": "mistral_tokens",
            "timestamp": NOW, "properties": {"tokens": tokens, "model": "mistral-small",
                                             "type": "input"}, **extra}


def objects(folder: Path) -> list[Path]:
    return sorted((folder / "bucket" / "api").rglob("*.jsonl"))


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
    {"Authorization": "Bearer"},
])
def test_a_missing_or_wrong_key_gets_lagos_401(client: TestClient,
                                               headers: dict[str, str]) -> None:
    client.headers.pop("Authorization")
    answer = client.post("/api/v1/events", json={"event": event("a")}, headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"status": 401, "error": "Unauthorized"}


@pytest.mark.parametrize("ttl", [0.0, 2.0])
def test_a_revoked_key_stops_working_within_the_key_cache_ttl(
    make_client: Callable[..., TestClient], engine: Engine, ttl: float
) -> None:
    """The API trusts a key it checked for ``key_cache_seconds`` (no query per request): a
    revoked key stops working at most that long after the revocation, and at once with 0."""
    client = make_client(key_cache_seconds=ttl)
    assert client.get("/api/v1/customers").status_code == 200
    revoke_key(engine, "tests")
    revoked_at = time.monotonic()
    if ttl:  # still trusted from the cache, within the bound
        assert client.get("/api/v1/customers").status_code == 200
        assert time.monotonic() - revoked_at < ttl
        time.sleep(ttl)
    assert client.get("/api/v1/customers").status_code == 401


def test_one_event_is_stored_in_an_hour_prefix_then_loaded_once(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    answer = client.post("/api/v1/events", json={"event": event("one", tokens="1.5")})
    assert answer.status_code == 200, answer.text
    body = answer.json()["event"]
    assert body["transaction_id"] == "one" and body["properties"]["tokens"] == "1.5"
    [stored] = objects(tmp_path)
    hour = datetime.now(UTC)
    assert stored.parent.relative_to(tmp_path / "bucket" / "api").as_posix() in {
        f"{hour:%Y/%m/%d/%H}", f"{datetime.fromtimestamp(NOW, UTC):%Y/%m/%d/%H}"}
    assert json.loads(stored.read_text()) == {k: v for k, v in event("one", "1.5").items()}
    assert wait_for(engine, "select count(*) from ingest_objects where status = 'ingested'",
                    1) == 1
    with engine.connect() as conn:
        row = conn.execute(text("select source, path from ingest_objects")).one()
        props = conn.execute(text("select properties->>'tokens' from events")).scalar_one()
    assert row.source == (tmp_path / "bucket").as_uri() + "/api"
    assert row.path == stored.as_uri()
    assert props == "1.5"


def test_a_batch_is_one_object_and_retries_are_counted_duplicates(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    batch = {"events": [event(f"b{i}") for i in range(100)]}
    assert client.post("/api/v1/events/batch", json=batch).status_code == 200
    assert client.post("/api/v1/events/batch", json=batch).status_code == 200  # a retry
    assert wait_for(engine, "select coalesce(sum(duplicates), 0) from ingest_objects"
                    " where status = 'ingested'", 100) == 100
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == 100
        assert conn.execute(text("select sum(accepted) from ingest_objects")).scalar_one() == 100
    deadline = time.monotonic() + 20  # the loader counts right after its commit
    while (status := client.get("/api/v1/tallyflow/status").json())["loader"][
            "duplicates"] < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert status["events_received"] == 200 and status["objects_written"] == 2
    assert (status["loader"]["accepted"], status["loader"]["duplicates"]) == (100, 100)


def _lago_422(details: dict[str, Any]) -> dict[str, Any]:
    return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
            "error_details": details}


BAD_BATCHES: list[tuple[str, Any, int, Any]] = [
    ("101 events", {"events": [event(f"x{i}") for i in range(101)]}, 422,
     _lago_422({"events": ["too_many_events"]})),
    ("no events", {"events": []}, 422, _lago_422({"events": ["no_events"]})),
    ("events not a list", {"events": {"a": 1}}, 422, _lago_422({"events": ["invalid_type"]})),
    ("missing field", {"events": [event("ok"), {**event("x"), "code": None}]}, 422,
     _lago_422({"1": {"code": ["value_is_mandatory"]}})),
    ("wrong type", {"events": [{**event("x"), "transaction_id": 5}]}, 422,
     _lago_422({"0": {"transaction_id": ["wrong_type"]}})),
    ("properties not an object", {"events": [{**event("x"), "properties": [1]}]}, 422,
     _lago_422({"0": {"properties": ["wrong_type"]}})),
    ("zone-less time", {"events": [{**event("x"), "timestamp": "2026-11-29T10:00:00"}]}, 422,
     _lago_422({"0": {"timestamp": ["timestamp_without_zone"]}})),
    ("unknown field", {"events": [{**event("x"), "colour": "red"}]}, 422,
     _lago_422({"0": {"colour": ["unknown_field"]}})),
    ("unknown body key", {"events": [event("x")], "extra": 1}, 422,
     _lago_422({"extra": ["unknown_field"]})),
    ("no events key", {"event": event("x")}, 400, None),
]


@pytest.mark.parametrize("name, body, status, expected", BAD_BATCHES,
                         ids=[b[0] for b in BAD_BATCHES])
def test_bad_batches_get_lagos_errors_and_store_nothing(
    client: TestClient, tmp_path: Path, name: str, body: Any, status: int, expected: Any
) -> None:
    answer = client.post("/api/v1/events/batch", json=body)
    assert answer.status_code == status, answer.text
    if expected is not None:
        assert answer.json() == expected
    assert answer.json()["status"] == status
    assert objects(tmp_path) == []


@pytest.mark.parametrize("data, status", [
    (b"not json", 400), (b"", 400), (b"[1, 2]", 400), (b'{"event": null}', 400),
    (b"{" + b" " * (5 * 1024 * 1024) + b"}", 413),
])
def test_bodies_that_are_not_events(client: TestClient, tmp_path: Path, data: bytes,
                                    status: int) -> None:
    answer = client.post("/api/v1/events", content=data,
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.json()["status"] == status
    assert objects(tmp_path) == []


def test_a_customer_id_must_be_the_subscriptions(client: TestClient, engine: Engine,
                                                  tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    with engine.connect() as conn:
        owner = conn.execute(text("select c.external_id from customers c join subscriptions s"
                                  " on s.customer_id = c.id where s.external_id = :s"),
                             {"s": SUB}).scalar_one()
    wrong = client.post("/api/v1/events",
                        json={"event": event("c", external_customer_id="someone_else")})
    assert wrong.status_code == 422
    assert wrong.json()["error_details"] == {
        "external_customer_id": ["does_not_match_subscription"]}
    right = client.post("/api/v1/events", json={"event": event("c", external_customer_id=owner)})
    assert right.status_code == 200


def test_the_scheduled_ingest_loads_an_api_object_once_whoever_comes_first(
    make_client: Callable[..., TestClient], engine: Engine, tmp_path: Path
) -> None:
    """The API answered, then died before its loader ran (load=False stands for that): the
    scheduled ingest of the same source loads the object; the loader coming late loads
    nothing; and the scheduled ingest listing again finds nothing new."""
    client = make_client(load=False)
    assert client.post("/api/v1/events/batch",
                       json={"events": [event("s1"), event("s2")]}).status_code == 200
    source = api_source(settings_for(tmp_path).source_url)
    ids = register_objects(engine, source, source.list())
    assert [ingest_object(engine, source, i).accepted for i in ids] == [2]
    late = Loader(engine, source)
    late.load([source.ref(p.as_uri()) for p in objects(tmp_path)])
    assert late.stats.objects == 0
    assert register_objects(engine, source, source.list()) == []
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == 2
        assert conn.execute(text("select count(*) from ingest_objects")).scalar_one() == 1


def test_the_loaders_identity_is_the_listings(tmp_path: Path) -> None:
    source = api_source((tmp_path / "b").as_uri() + "/api")
    writer = ObjectWriter(source)
    ref = writer.write(b'{"transaction_id": "a"}\n', datetime.now(UTC))
    assert list(source.list()) == [ref]


def test_a_loader_that_crashes_mid_load_leaves_the_object_to_the_next(
    make_client: Callable[..., TestClient], engine: Engine, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tallyflow.infra import failpoints

    client = make_client(load=False)
    assert client.post("/api/v1/events", json={"event": event("m")}).status_code == 200
    source = api_source(settings_for(tmp_path).source_url)
    refs = list(source.list())
    failpoints.arm("ingest.before_commit=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            Loader(engine, source).load(refs)
    finally:
        failpoints.arm(None)
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == 0
    again = Loader(engine, source)
    again.load(refs)
    assert again.stats.accepted == 1
    assert register_objects(engine, source, source.list()) == []


def test_concurrent_requests_share_one_object(tmp_path: Path) -> None:
    written: list[ObjectRef] = []
    source = api_source((tmp_path / "b").as_uri() + "/api")
    writer = ObjectWriter(source)

    async def scenario() -> list[ObjectRef]:
        commit = GroupCommit(writer.write, interval=3600.0, max_events=10,
                             on_written=written.append)
        commit._last = 1e18  # a write just happened: the next waits for the interval...
        runner = asyncio.create_task(commit.run())
        refs = await asyncio.gather(*(commit.submit([f'{{"n": {i}}}\n'.encode()])
                                      for i in range(10)))  # ...or for 10 events
        runner.cancel()
        return list(refs)

    refs = asyncio.run(scenario())
    assert len(set(refs)) == 1 and written == refs[:1]
    lines = Path(refs[0].url.removeprefix("file://")).read_text().splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(10))


def test_objects_on_every_store_keep_the_listings_identity_and_load(
    bucket: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local folder (fsynced, renamed), memory and S3 (one PUT): the loader's reference is
    the listing's, so the scheduled ingest sees the same ledger row."""
    if bucket.options.get("endpoint_url"):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bucket.options["endpoint_url"])
    source = api_source(bucket.url.rstrip("/") + "/api")
    writer = ObjectWriter(source)
    lines = b"".join(json.dumps(event(f"s{i}")).encode() + b"\n" for i in range(3))
    ref = writer.write(lines, datetime.now(UTC))
    assert list(source.list()) == [ref]
    loader = Loader(engine, source)
    loader.load([ref])
    assert (loader.stats.objects, loader.stats.accepted) == (1, 3)
    assert register_objects(engine, source, source.list()) == []


# The number rule (models/number_rule.py): refused before anything is written, with Lago's 422
# envelope and one reason, whatever the value's notation.
OUT_OF_RANGE = [
    ("1e400", b'"tokens": 1e400', "properties.tokens"),
    ("-1e400", b'"tokens": -1e400', "properties.tokens"),
    ("1e308", b'"tokens": 1e308', "properties.tokens"),
    ("-1e308", b'"tokens": -1e308', "properties.tokens"),
    ("30-digit", b'"tokens": 123456789012345678901234567890', "properties.tokens"),
    ("edge", b'"tokens": 10000000000000000000000000', "properties.tokens"),
    ("40-decimals", b'"tokens": 0.' + b"0" * 39 + b"1", "properties.tokens"),
    ("nested", b'"tokens": 1, "usage": {"cached": [1e400]}', "properties.usage.cached[0]"),
]


def _raw_event(txn: str, properties: bytes, extra: bytes = b"") -> bytes:
    return (b'{"transaction_id": "' + txn.encode() + b'", "external_subscription_id": "'
            + SUB.encode() + b'", "code": "mistral_tokens", "timestamp": '
            + str(NOW).encode() + b', "properties": {' + properties + b"}" + extra + b"}")


@pytest.mark.parametrize("name, properties, field", OUT_OF_RANGE,
                         ids=[c[0] for c in OUT_OF_RANGE])
def test_numbers_out_of_range_get_lagos_422_and_store_nothing(
    client: TestClient, tmp_path: Path, name: str, properties: bytes, field: str
) -> None:
    headers = {"Content-Type": "application/json"}
    one = client.post("/api/v1/events", headers=headers,
                      content=b'{"event": ' + _raw_event("x", properties) + b"}")
    assert one.status_code == 422, one.text
    assert one.json() == _lago_422({field: ["number_out_of_range"]})
    batch = client.post("/api/v1/events/batch", headers=headers, content=(
        b'{"events": [' + _raw_event("ok", b'"tokens": 5') + b", "
        + _raw_event("x", properties) + b"]}"))
    assert batch.status_code == 422, batch.text
    assert batch.json() == _lago_422({"1": {field: ["number_out_of_range"]}})
    assert objects(tmp_path) == []


def test_a_precise_amount_out_of_range_gets_lagos_422(client: TestClient,
                                                      tmp_path: Path) -> None:
    answer = client.post("/api/v1/events", headers={"Content-Type": "application/json"},
                         content=b'{"event": ' + _raw_event(
                             "x", b'"tokens": 1', b', "precise_total_amount_cents": 1e400')
                         + b"}")
    assert answer.status_code == 422, answer.text
    assert answer.json() == _lago_422({"precise_total_amount_cents": ["number_out_of_range"]})
    assert objects(tmp_path) == []


def test_the_largest_accepted_integer_is_answered_as_json_and_loaded(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    """Beyond 64 bits but inside the bound: answered in JSON (the digits as a string, which
    no client's reader rounds), never a text 500 after the event was written."""
    biggest = 10**25 - 1
    answer = client.post("/api/v1/events", json={"event": event("big", tokens=biggest)})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["event"]["properties"]["tokens"] == str(biggest)
    assert wait_for(engine, "select count(*) from events", 1) == 1
    with engine.connect() as conn:
        stored = conn.execute(text("select properties->>'tokens' from events")).scalar_one()
    assert stored == str(biggest)
