"""The merge tries a plain INSERT first and falls back to ON CONFLICT: the same rows must land
in the same order either way, and the cheap statement must be the one that runs for an object
of new events (tasks/ingest/load.py: _merge)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from tallyflow.tasks.ingest import build_source, ingest_object, register_objects
from tallyflow.tasks.ingest import load as ingest_module
from tests.factories import event as lago_event
from tests.factories import jsonl
from tests.storage import Bucket

pytestmark = pytest.mark.parametrize("bucket", ["file"], indirect=True)


@contextmanager
def merges(engine: Engine) -> Iterator[list[str]]:
    """The merge statements run, as "plain" or "on conflict", in order."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "insert into events" in statement:
            seen.append("on conflict" if "on conflict" in statement else "plain")

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def load(engine: Engine, bucket: Bucket) -> list[tuple[int, int, int, int]]:
    """Ingest what is new; (accepted, duplicates, conflicts, rejected) per object."""
    source = build_source(bucket.spec())
    ids = register_objects(engine, source.key, source.list())
    results = [ingest_object(engine, source, i, chunk_rows=50) for i in ids]
    return [(r.accepted, r.duplicates, r.conflicts, r.rejected) for r in results]


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    """Every event with where it came from, in ingestion (id) order."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select e.external_subscription_id, e.transaction_id, e.properties::text,"
            " o.path, e.row_number from events e join ingest_objects o on o.id = e.object_id"
            " order by e.id"))]


changed = lago_event(3, properties={"tokens": 7, "model": "mistral-small", "type": "input"})
# (name, objects put in turn: each a list of events, expected statements, expected counts)
CASES = [
    ("new events", [[lago_event(i) for i in range(120)]], ["plain"], [(120, 0, 0, 0)]),
    ("one event", [[lago_event(1)]], ["plain"], [(1, 0, 0, 0)]),
    ("repeated in the object, last row",
     [[lago_event(i) for i in range(120)] + [lago_event(0)]],
     ["plain", "on conflict"], [(120, 1, 0, 0)]),
    ("a conflicting copy in the object",
     [[lago_event(i) for i in range(5)] + [changed]],
     ["plain", "on conflict"], [(5, 0, 1, 0)]),
    ("the same object dropped again under another name",
     [[lago_event(i) for i in range(60)], [lago_event(i) for i in range(60)]],
     ["plain", "plain", "on conflict"], [(60, 0, 0, 0), (0, 60, 0, 0)]),
    ("stored keys among new ones",
     [[lago_event(i) for i in range(10)], [lago_event(i) for i in range(5, 15)]],
     ["plain", "plain", "on conflict"], [(10, 0, 0, 0), (5, 5, 0, 0)]),
    ("other subscriptions share transaction ids",
     [[lago_event(i) for i in range(10)], [lago_event(i, sub="sub_b") for i in range(10)]],
     ["plain", "plain"], [(10, 0, 0, 0), (10, 0, 0, 0)]),
]


@pytest.mark.parametrize(("objects", "statements", "counts"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_plain_insert_first_then_on_conflict_lands_the_same_rows(
    engine: Engine, bucket: Bucket, monkeypatch: pytest.MonkeyPatch,
    objects: list[list[dict[str, Any]]], statements: list[str],
    counts: list[tuple[int, int, int, int]],
) -> None:
    results, seen = [], []
    for n, records in enumerate(objects):
        bucket.put(f"part-{n}.jsonl", jsonl(records))
        with merges(engine) as merged:
            results += load(engine, bucket)
        seen += merged
    assert results == counts
    assert seen == statements
    optimistic = stored(engine)
    # the same objects again, into an empty table, with ON CONFLICT only (the old merge)
    with engine.begin() as conn:
        conn.execute(text("truncate events, rejected_rows, ingest_objects restart identity"
                          " cascade"))
    monkeypatch.setattr(ingest_module, "_MERGE_NEW", ingest_module._MERGE)
    with merges(engine) as merged:
        assert load(engine, bucket) == counts
    assert set(merged) == {"on conflict"}
    assert stored(engine) == optimistic


def test_an_error_other_than_a_stored_key_is_not_retried(
    engine: Engine, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a NOT NULL violation in the plain statement must fail the object, not fall back
    broken = ingest_module._MERGE_SQL.format(on_conflict="", **ingest_module._BILLS).replace(
        "select external_subscription_id, transaction_id, code,",
        "select external_subscription_id, transaction_id, null,")
    monkeypatch.setattr(ingest_module, "_MERGE_NEW", text(broken))
    bucket.put("a.jsonl", jsonl([lago_event(1)]))
    source = build_source(bucket.spec())
    (object_id,) = register_objects(engine, source.key, source.list())
    with merges(engine) as merged:
        result = ingest_object(engine, source, object_id)
    assert merged == ["plain"]
    assert result.status == "failed"
    assert "null value" in (result.error or "")
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from events")).scalar_one() == 0
