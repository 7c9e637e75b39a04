"""Exactly once and nothing lost, on every storage kind, without Prefect (the flow is thin)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import (
    ObjectResult,
    build_source,
    ingest_object,
    register_objects,
    requeue,
)
from tests.factories import event, jsonl
from tests.storage import Bucket


def ingest_all(engine: Engine, bucket: Bucket, **spec: object) -> list[ObjectResult]:
    source = build_source(bucket.spec(**spec))
    ids = register_objects(engine, source.key, source.list())
    return [ingest_object(engine, source, i, chunk_rows=100) for i in ids]


def scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_same_prefix_twice_adds_nothing(engine: Engine, bucket: Bucket) -> None:
    bucket.put("a.jsonl", jsonl([event(i) for i in range(300)]))
    bucket.put("b.jsonl", jsonl([event(i) for i in range(300, 500)]))
    first = ingest_all(engine, bucket)
    assert [r.status for r in first] == ["ingested", "ingested"]
    assert sum(r.accepted for r in first) == 500
    assert ingest_all(engine, bucket) == []
    assert scalar(engine, "select count(*) from events") == 500
    assert scalar(engine, "select count(*) from ingest_objects") == 2


def test_three_bad_rows_among_a_thousand(engine: Engine, bucket: Bucket) -> None:
    rows = [jsonl([event(i)]).strip() for i in range(1000)]
    rows[10] = '{"transaction_id": "tx-10", "code": "mistral_tokens"'  # truncated JSON
    rows[500] = jsonl([event(500, timestamp="2025-11-24T16:00:00")]).strip()  # no zone
    rows[999] = jsonl([event(999, properties=["not", "an", "object"])]).strip()
    bucket.put("batch.jsonl", "\n".join(rows) + "\n")
    (result,) = ingest_all(engine, bucket)
    assert (result.status, result.rows, result.accepted, result.rejected) == (
        "ingested", 1000, 997, 3,
    )
    with engine.connect() as conn:
        rejected = conn.execute(
            text("select row_number, field, reason from rejected_rows order by row_number")
        ).all()
    assert [tuple(r) for r in rejected] == [
        (11, None, "invalid_json"),
        (501, "timestamp", "timestamp_without_zone"),
        (1000, "properties", "wrong_type"),
    ]


def test_duplicates_first_copy_wins_and_other_subscription_is_another_event(
    engine: Engine, bucket: Bucket
) -> None:
    first = event(1, properties={"tokens": 1, "model": "mistral-small", "type": "input"})
    second = event(1, properties={"tokens": 999, "model": "mistral-small", "type": "input"})
    other_sub = event(1, sub="sub_other")
    bucket.put("a.jsonl", jsonl([first, second, other_sub]))
    bucket.put("b.jsonl", jsonl([second, first]))
    results = ingest_all(engine, bucket)
    assert sum(r.accepted for r in results) == 2
    # b's copy of the first is identical: a plain duplicate; the 999-token copies differ from
    # the stored one: conflicts, kept out and reported with the row that was kept
    assert sum(r.duplicates for r in results) == 1
    assert sum(r.conflicts for r in results) == 2
    with engine.connect() as conn:
        rejected = conn.execute(text(
            "select o.path, r.row_number, r.reason, r.message from rejected_rows r"
            " join ingest_objects o on o.id = r.object_id order by o.path, r.row_number"
        )).all()
    assert [(p.rsplit("/", 1)[-1], n, reason) for p, n, reason, _ in rejected] == [
        ("a.jsonl", 2, "conflicting_duplicate"), ("b.jsonl", 1, "conflicting_duplicate")]
    assert all("from row 1 of" in m and "a.jsonl (kept) with another properties" in m
               for *_, m in rejected)
    with engine.connect() as conn:
        tokens = conn.execute(
            text(
                "select properties->>'tokens' from events"
                " where external_subscription_id = 'sub_acme_001' and transaction_id = 'tx-1'"
            )
        ).scalar_one()
    assert tokens == "1"


def test_changed_object_is_a_new_version_and_only_new_events_count(
    engine: Engine, bucket: Bucket
) -> None:
    bucket.put("a.jsonl", jsonl([event(i) for i in range(10)]))
    assert sum(r.accepted for r in ingest_all(engine, bucket)) == 10
    bucket.put("a.jsonl", jsonl([event(i) for i in range(15)]))
    (again,) = ingest_all(engine, bucket)
    assert (again.accepted, again.duplicates) == (5, 10)
    assert scalar(engine, "select count(*) from ingest_objects") == 2


def test_unreadable_object_fails_alone_and_is_retried(engine: Engine, bucket: Bucket) -> None:
    bucket.put("good.jsonl", jsonl([event(i) for i in range(5)]))
    bucket.put("bad.jsonl.gz", b"this is not gzip")
    results = {r.url.rsplit("/", 1)[-1]: r for r in ingest_all(engine, bucket)}
    assert results["good.jsonl"].status == "ingested"
    assert results["bad.jsonl.gz"].status == "failed"
    assert "gzip" in (results["bad.jsonl.gz"].error or "").lower()
    retried = ingest_all(engine, bucket)
    assert [r.status for r in retried] == ["failed"]
    assert scalar(engine, "select attempts from ingest_objects where status = 'failed'") == 2
    assert scalar(engine, "select count(*) from events") == 5


def test_unknown_codes_and_subscriptions_are_stored_and_counted_unbillable(
    engine: Engine, bucket: Bucket
) -> None:
    bucket.put("a.jsonl", jsonl([event(1, code="nope"), event(2, sub="sub_unknown")]))
    (result,) = ingest_all(engine, bucket)
    assert (result.accepted, result.unbillable) == (2, 2)
    assert scalar(engine, "select count(*) from events") == 2


@pytest.mark.parametrize("removed", [None, "tx-1", "tx-3"])
def test_unbillable_counts_only_what_landed_in_this_read(
    engine: Engine, bucket: Bucket, removed: str | None
) -> None:
    # No subscriptions here: every event is unbillable. A duplicate within the object means not
    # every staged row lands, so the count has to find the rows that did.
    bucket.put("a.jsonl", jsonl([event(1), event(1), event(2, code="nope"),
                                 event(3, sub="sub_unknown")]))
    (first,) = ingest_all(engine, bucket)
    assert (first.accepted, first.duplicates, first.unbillable) == (3, 1, 3)
    if removed:  # e.g. archived, then the object is read again
        with engine.begin() as conn:
            conn.execute(text("delete from events where transaction_id = :t"), {"t": removed})
    requeue(engine, build_source(bucket.spec()).key)  # the same ledger row is read again
    (again,) = ingest_all(engine, bucket)
    assert again.object_id == first.object_id
    # only the event that landed again counts, not the ones stored by the first read
    landed = 1 if removed else 0
    assert (again.accepted, again.unbillable) == (landed, landed)


def test_concurrent_runs_ingest_each_object_once(engine: Engine, bucket: Bucket) -> None:
    for n in range(6):
        bucket.put(f"part-{n}.jsonl", jsonl([event(n * 1000 + i) for i in range(200)]))
    outcomes: list[list[ObjectResult]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcomes.append(ingest_all(engine, bucket))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ingested = [r for results in outcomes for r in results if r.status == "ingested"]
    assert len(ingested) == len({r.url for r in ingested}) == 6  # each object by one run only
    assert scalar(engine, "select count(*) from ingest_objects where status = 'ingested'") == 6
    assert scalar(engine, "select count(*) from events") == 1200
    assert scalar(engine, "select sum(duplicates) from ingest_objects") == 0


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_compressed_objects(engine: Engine, bucket: Bucket, compression: str) -> None:
    import gzip

    import zstandard

    payload = jsonl([event(i) for i in range(50)]).encode()
    packed = gzip.compress(payload) if compression == "gz" else zstandard.compress(payload)
    bucket.put(f"a.jsonl.{compression}", packed)
    (result,) = ingest_all(engine, bucket)
    assert (result.status, result.error, result.accepted) == ("ingested", None, 50)
