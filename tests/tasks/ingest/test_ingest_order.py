"""Duplicates you can explain: within a run objects load in URL order, whichever arrived first
or loaded faster; a copy with other content than the stored one is a counted, reported
conflict. Runs on the external server, and on the embedded one with TALLYFLOW_TEST_EMBEDDED=1."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.ingest import (
    SourceSpec,
    build_source,
    ingest_object,
    register_objects,
    start_run,
)
from tallyflow.tasks.ingest import load as ingest_module
from tallyflow.tasks.usage import current_usage
from tests.factories import BASE_TS, event, jsonl
from tests.tasks.rating_fixtures import SUB, apply_mistral

AT = datetime.fromtimestamp(BASE_TS + 3600, UTC)
# a.jsonl: tx-0..9; b.jsonl: tx-5..14, where tx-5..9 carry ten times the tokens (conflicts)
A = [event(i) for i in range(10)]
B = [event(i, properties={**event(i)["properties"], "tokens": (1000 + i) * (10 if i < 10 else 1)})
     for i in range(5, 15)]
BILLED_TOKENS = sum(1000 + i for i in range(15))  # a's copies of tx-5..9 win


def _drop(folder: Path, first: str) -> None:
    """Write both objects, ``first`` with the older modification time (it "arrived" first)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (("a.jsonl", A), ("b.jsonl", B)):
        (folder / name).write_text(jsonl(records))
    second = "b.jsonl" if first == "a.jsonl" else "a.jsonl"
    os.utime(folder / first, (BASE_TS, BASE_TS))
    os.utime(folder / second, (BASE_TS + 60, BASE_TS + 60))


def _billed(engine: Engine) -> tuple[Decimal, dict[str, Any]]:
    fold_pending(engine)
    usage = current_usage(engine, SUB, AT)
    units = sum(Decimal(c["units"]) for c in usage["charges_usage"])
    with engine.connect() as conn:
        conflicts = conn.execute(text(
            "select o.path, r.row_number, r.message from rejected_rows r"
            " join ingest_objects o on o.id = r.object_id"
            " where r.reason = 'conflicting_duplicate' order by r.row_number"
        )).all()
    return units, {"conflicts": [(p.rsplit("/", 1)[-1], n) for p, n, _ in conflicts],
                   "messages": [m for *_, m in conflicts]}


def _expected_conflicts(billed: dict[str, Any]) -> None:
    assert billed["conflicts"] == [("b.jsonl", n) for n in range(1, 6)]
    assert all("of file://" in m and "a.jsonl (kept) with another properties" in m
               for m in billed["messages"])


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("first", ["a.jsonl", "b.jsonl"])
def test_flow_bills_the_same_in_either_arrival_order(
    engine: Engine, tmp_path: Path, first: str
) -> None:
    apply_mistral(engine, tmp_path)
    folder = tmp_path / "bucket"
    _drop(folder, first)
    summary = ingest_events(SourceSpec(url=folder.as_uri()))
    assert (summary["accepted"], summary["duplicates"], summary["conflicts"]) == (15, 0, 5)
    with engine.connect() as conn:
        run = conn.execute(text("select conflicts, duplicates from ingest_runs")).one()
    assert tuple(run) == (5, 0)
    units, billed = _billed(engine)
    assert units == BILLED_TOKENS
    _expected_conflicts(billed)


def test_a_later_object_that_loads_first_waits_for_its_turn(
    engine: Engine, tmp_path: Path
) -> None:
    """b.jsonl starts loading first (a slow or busy worker for a.jsonl) and still merges after
    a.jsonl, because a.jsonl comes before it in the run."""
    apply_mistral(engine, tmp_path)
    folder = tmp_path / "bucket"
    _drop(folder, "b.jsonl")
    source = build_source(SourceSpec(url=folder.as_uri()))
    a_id, b_id = register_objects(engine, source.key, source.list())
    run_id = start_run(engine, source.key, None)
    results: dict[str, Any] = {}

    def load(name: str, object_id: int, after: list[int]) -> None:
        results[name] = ingest_object(engine, source, object_id, run_id=run_id, after=after)

    b = threading.Thread(target=load, args=("b", b_id, [a_id]))
    b.start()
    time.sleep(1.0)
    assert b.is_alive(), "b.jsonl must wait for a.jsonl"
    load("a", a_id, [])
    b.join(timeout=60)
    assert (results["a"].accepted, results["a"].conflicts) == (10, 0)
    assert (results["b"].accepted, results["b"].conflicts, results["b"].duplicates) == (5, 5, 0)
    units, billed = _billed(engine)
    assert units == BILLED_TOKENS
    _expected_conflicts(billed)


def test_a_waiting_object_merges_as_soon_as_its_predecessor_commits(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one process the wait ends on the predecessor's commit, not at the next poll: with a
    poll interval far longer than the test, b.jsonl still follows a.jsonl at once."""
    monkeypatch.setattr(ingest_module, "_ORDER_POLL_SECONDS", 30.0)
    folder = tmp_path / "bucket"
    _drop(folder, "a.jsonl")
    source = build_source(SourceSpec(url=folder.as_uri()))
    a_id, b_id = register_objects(engine, source.key, source.list())
    run_id = start_run(engine, source.key, None)
    done: dict[str, float] = {}

    def load_b() -> None:
        ingest_object(engine, source, b_id, run_id=run_id, after=[a_id])
        done["b"] = time.monotonic()

    b = threading.Thread(target=load_b)
    b.start()
    time.sleep(0.5)  # b is staged and polling
    assert b.is_alive()
    ingest_object(engine, source, a_id, run_id=run_id)
    committed = time.monotonic()
    b.join(timeout=60)
    assert done["b"] - committed < 10


def test_identical_copies_stay_plain_duplicates(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "a.jsonl").write_text(jsonl(A))
    (folder / "b.jsonl").write_text(jsonl(A[:4] + [event(99)]))
    source = build_source(SourceSpec(url=folder.as_uri()))
    ids = register_objects(engine, source.key, source.list())
    results = [ingest_object(engine, source, i, after=ids[:n]) for n, i in enumerate(ids)]
    assert [(r.accepted, r.duplicates, r.conflicts) for r in results] == [(10, 0, 0), (1, 4, 0)]


def test_an_object_does_not_wait_forever_for_a_stuck_predecessor(
    engine: Engine, tmp_path: Path
) -> None:
    """A predecessor that never finishes (its worker died for good) delays an object only up
    to order_timeout; the conflicts are still found and reported."""
    folder = tmp_path / "bucket"
    _drop(folder, "a.jsonl")
    source = build_source(SourceSpec(url=folder.as_uri()))
    a_id, b_id = register_objects(engine, source.key, source.list())
    run_id = start_run(engine, source.key, None)
    started = time.monotonic()
    result = ingest_object(engine, source, b_id, run_id=run_id, after=[a_id], order_timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 30
    assert (result.status, result.accepted) == ("ingested", 10)
    later = ingest_object(engine, source, a_id, run_id=run_id)
    assert (later.accepted, later.conflicts, later.duplicates) == (5, 5, 0)


def _load_all(engine: Engine, folder: Path) -> list[Any]:
    source = build_source(SourceSpec(url=folder.as_uri()))
    ids = register_objects(engine, source.key, source.list())
    return [ingest_object(engine, source, i, after=ids[:n]) for n, i in enumerate(ids)]


def _conflict_messages(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "select message from rejected_rows where reason = 'conflicting_duplicate'"
            " order by object_id, row_number")).scalars())


def test_duplicates_compare_numbers_by_value(engine: Engine, tmp_path: Path) -> None:
    """The same events as JSON (100), JSON (100.0, 1e2) and CSV ("100"): plain duplicates,
    whatever the format wrote; a real difference is a conflict naming the property."""
    folder = tmp_path / "bucket"
    folder.mkdir()
    base = [event(i, properties={"tokens": 100, "model": "m", "type": "input"})
            for i in range(4)]
    (folder / "a.jsonl").write_text(jsonl(base))
    (folder / "b.jsonl").write_text(
        jsonl([event(0, properties={"tokens": 100, "model": "m", "type": "input"})])
        .replace('"tokens": 100', '"tokens": 100.0')
        + jsonl([event(1, properties={"tokens": 100, "model": "m", "type": "input"})])
        .replace('"tokens": 100', '"tokens": 1e2'))
    header = ("transaction_id,external_subscription_id,code,timestamp,properties.tokens,"
              "properties.model,properties.type\n")
    rows = [f"{e['transaction_id']},{e['external_subscription_id']},{e['code']},"
            f"{e['timestamp']},{tokens},m,{kind}\n"
            for e, tokens, kind in ((base[2], "100", "input"), (base[3], "100.00", "input"))]
    (folder / "c.csv").write_text(header + "".join(rows))
    (folder / "d.csv").write_text(header + f"{base[0]['transaction_id']},"
                                  f"{base[0]['external_subscription_id']},{base[0]['code']},"
                                  f"{base[0]['timestamp']},101,m,output\n")
    results = _load_all(engine, folder)
    assert [(r.accepted, r.duplicates, r.conflicts) for r in results] == [
        (4, 0, 0), (0, 2, 0), (0, 2, 0), (0, 0, 1)]
    [message] = _conflict_messages(engine)
    assert "a.jsonl (kept) with another properties (" in message
    assert 'tokens: 100 kept, "101" in this copy' in message
    assert 'type: "input" kept, "output" in this copy' in message
    assert "model" not in message  # the same in both copies


def test_a_conflict_names_a_missing_property_and_caps_the_list(
    engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    kept = {"tokens": 1, **{f"k{i}": i for i in range(7)}}
    (folder / "a.jsonl").write_text(jsonl([event(0, properties=kept)]))
    (folder / "b.jsonl").write_text(jsonl([event(0, properties={
        "tokens": 1, **{f"k{i}": i + 1 for i in range(6)}}, code="other")]))
    assert [r.conflicts for r in _load_all(engine, folder)] == [0, 1]
    [message] = _conflict_messages(engine)
    assert "with another code, properties (k0: 0 kept, 1 in this copy;" in message
    assert "k6: 6 kept, missing in this copy" not in message  # past the five named
    assert "; and 2 more)" in message
