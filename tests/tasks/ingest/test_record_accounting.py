"""Every record accounted for (docs/data-quality.md): each record read is emitted (with its
events), rejected, or empty (``no_usage``: counted, never stored), per object and per run, in
every format and through mappings; records = emitted + rejected + empty."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tallyflow.models.events import TimeBounds
from tallyflow.tasks.ingest import (
    ObjectResult,
    SourceSpec,
    build_source,
    finish_run,
    ingest_object,
    register_objects,
    start_run,
)
from tallyflow.tasks.ingest.columnar import COLUMN_MIN_ROWS, staged_jsonl
from tallyflow.tasks.ingest.staging import stage_rows
from tests.factories import event, jsonl

BOUNDS = TimeBounds(written_at=datetime(2026, 1, 1, tzinfo=UTC))

# One event per listed token type; ``skip_zero`` is set per case.
MAPPING = """
name: accounting-test
transaction_id: id
external_subscription_id: user
timestamp: created
code: {const: llm_tokens}
each:
  skip_zero: %s
  fields:
    input: usage.prompt_tokens
    output: usage.completion_tokens
"""


def _mapping(tmp_path: Path, skip_zero: bool = True, typo: bool = False) -> str:
    body = MAPPING % ("true" if skip_zero else "false")
    if typo:
        body = body.replace("usage.prompt_tokens", "usage.promt_tokens").replace(
            "usage.completion_tokens", "usage.completon_tokens")
    path = tmp_path / f"mapping-{skip_zero}-{typo}.yaml"
    path.write_text(body)
    return str(path)


def _record(i: int, prompt: Any = 10, completion: Any = 5, **extra: Any) -> dict[str, Any]:
    usage = {k: v for k, v in (("prompt_tokens", prompt), ("completion_tokens", completion))
             if v is not None}
    return {"id": f"r-{i}", "user": "sub_a", "created": 1_764_000_000 + i, "usage": usage,
            **extra}


def _ingest(engine: Engine, folder: Path, **spec: Any) -> list[ObjectResult]:
    source = build_source(SourceSpec(url=folder.as_uri(), **spec))
    run_id = start_run(engine, source.key, None)
    ids = register_objects(engine, source, source.list())
    results = [ingest_object(engine, source, i, run_id) for i in ids]
    finish_run(engine, run_id, results, 0.0)
    return results


def _ledger(engine: Engine) -> list[tuple[int, ...]]:
    with engine.connect() as conn:
        objects = conn.execute(text(
            "select records, records_emitted, rejected, records_empty, events from ingest_objects"
            " order by path")).all()
        runs = conn.execute(text(
            "select records, records_emitted, rejected, records_empty, events from ingest_runs"
            " order by id")).all()
    return [tuple(r) for r in objects] + [tuple(r) for r in runs]


def _counts(result: ObjectResult) -> tuple[int, int, int, int, int]:
    assert result.status == "ingested", result.error
    assert result.records == result.records_emitted + result.rejected + result.records_empty
    assert result.events == result.accepted + result.duplicates + result.conflicts
    return (result.records, result.records_emitted, result.rejected, result.records_empty,
            result.events)


# (case, records, skip_zero, typo) -> (records, emitted, rejected, empty, events)
CASES = [
    ("two counts each", [_record(1), _record(2)], True, False, (2, 2, 0, 0, 4)),
    ("all counts zero, skip_zero", [_record(1, 0, 0), _record(2)], True, False, (2, 1, 0, 1, 2)),
    ("all counts zero, skip_zero false: zero-valued events",
     [_record(1, 0, 0), _record(2)], False, False, (2, 2, 0, 0, 4)),
    ("one count zero, skip_zero", [_record(1, 0, 7)], True, False, (1, 1, 0, 0, 1)),
    ("all counts absent (either way)", [_record(1, None, None)], False, False, (1, 0, 0, 1, 0)),
    ("a typo in the mapping's paths", [_record(1), _record(2)], True, True, (2, 0, 0, 2, 0)),
    ("a non-numeric count rejects the record",
     [_record(1, "abc"), _record(2), _record(3, None, None)], True, False, (3, 1, 1, 1, 2)),
    ("a record without an id is rejected", [{"user": "sub_a"}, _record(2)], True, False,
     (2, 1, 1, 0, 2)),
]


@pytest.mark.parametrize(("records", "skip_zero", "typo", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mapped_records_are_emitted_rejected_or_empty(
    engine: Engine, tmp_path: Path, records: list[Any], skip_zero: bool, typo: bool,
    expected: tuple[int, ...],
) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "a.jsonl").write_text(jsonl(records))
    (result,) = _ingest(engine, folder, mapping=_mapping(tmp_path, skip_zero, typo))
    assert _counts(result) == expected
    assert _ledger(engine) == [expected, expected]  # the object's row and the run's
    with engine.connect() as conn:
        stored = conn.execute(text("select count(*) from events")).scalar_one()
        rejects = conn.execute(text("select count(*) from rejected_rows")).scalar_one()
    assert (stored, rejects) == (expected[4], expected[2])  # empty records store nothing


def test_zero_valued_events_when_skip_zero_is_false(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    (folder / "a.jsonl").write_text(jsonl([_record(1, 0, 0)]))
    _ingest(engine, folder, mapping=_mapping(tmp_path, skip_zero=False))
    with engine.connect() as conn:
        rows = conn.execute(text("select transaction_id, properties->>'tokens' from events"
                                 " order by sub_index")).all()
    assert [tuple(r) for r in rows] == [("r-1:input", "0"), ("r-1:output", "0")]


def _csv(rows: list[dict[str, Any]]) -> str:
    head = "transaction_id,external_subscription_id,code,timestamp,properties"
    return head + "\n" + "".join(
        f"{r['transaction_id']},{r['external_subscription_id']},{r['code']},{r['timestamp']},"
        f"\"{json.dumps(r['properties']).replace(chr(34), chr(34) * 2)}\"\n" for r in rows)


def test_every_format_accounts_for_every_record_per_object_and_run(
    engine: Engine, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "bucket"
    folder.mkdir()
    good = [event(i) for i in range(5)]
    (folder / "a.jsonl").write_text(
        jsonl(good[:3]) + '{"transaction_id": "x"}\n' + "\n" + jsonl([good[0]]))
    (folder / "b.csv").write_text(_csv([event(i) for i in range(10, 14)])
                                  + "t-bad,,mistral_tokens,1,{}\n")
    table = pa.table({
        "transaction_id": [f"p-{i}" for i in range(3)] + [""],
        "external_subscription_id": ["sub_acme_001"] * 4,
        "code": ["mistral_tokens"] * 4,
        "timestamp": [1_764_000_000] * 4,
        "properties": ['{"tokens": 5}'] * 4,
    })
    pq.write_table(table, folder / "c.parquet")
    results = _ingest(engine, folder)
    # jsonl: 5 records (a blank line is no record): 4 emitted (one a duplicate), 1 rejected
    assert [_counts(r) for r in results] == [(5, 4, 1, 0, 4), (5, 4, 1, 0, 4), (4, 3, 1, 0, 3)]
    assert (results[0].accepted, results[0].duplicates) == (3, 1)
    run = (14, 11, 3, 0, 11)
    assert _ledger(engine) == [*[_counts(r) for r in results], run]


def test_the_column_path_counts_the_records_the_row_path_counts() -> None:
    """Lago JSON Lines staged by column (a chunk of many lines) count as by row."""
    source = build_source(SourceSpec(url="memory://accounting"))
    lines = [event(i) for i in range(COLUMN_MIN_ROWS + 3)]
    lines[5] = {"transaction_id": "bad"}
    data = jsonl(lines).encode()
    (staged, rejected), *_ = list(staged_jsonl(io.BytesIO(data), len(lines), source, BOUNDS))
    assert (staged.records, staged.empty, len(rejected), staged.rows) == (
        len(lines), 0, 1, len(lines) - 1)


# Records as a mapping sees them: with counts, with zero or absent counts, broken ones.
_COUNT = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["abc", True, "1,000", -1]))


@st.composite
def _records(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        record = _record(i, draw(_COUNT), draw(_COUNT))
        if draw(st.booleans()) and draw(st.booleans()):
            record.pop("id")
        out.append(record)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records(), skip_zero=st.booleans())
def test_records_equal_emitted_plus_rejected_plus_empty(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]], skip_zero: bool
) -> None:
    folder = tmp_path_factory.mktemp("mapping")
    source = build_source(SourceSpec(url="memory://accounting",
                                     mapping=_mapping(folder, skip_zero)))
    chunk = [(i + 1, record, None) for i, record in enumerate(records)]
    lines, rejected, empty = stage_rows(chunk, source, BOUNDS)
    emitted = {int(line.split("\t", 1)[0]) for line in lines}
    assert len(records) == len(emitted) + len(rejected) + empty
    assert emitted.isdisjoint(row for row, *_ in rejected)
    for row, record, _ in chunk:  # each record's verdict is its own
        counts = [record["usage"].get(k) for k in ("prompt_tokens", "completion_tokens")]
        present = [c for c in counts if c is not None]
        if row in emitted:
            assert present and all(type(c) is int and c >= 0 for c in present)
        elif "id" in record and all(type(c) is int and c >= 0 for c in present):
            # not rejected: empty because nothing was counted
            assert not present or (skip_zero and all(c == 0 for c in present))
