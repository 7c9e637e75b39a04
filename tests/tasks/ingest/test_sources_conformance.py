"""Conformance for every registered source and mapping, built-in or installed as a plugin.

Each mapping ships its golden records (the exact shape it reads) and the exact events and
rejects they give; each source kind says how to list a folder of golden objects
(``Source.golden_case``). Nothing here knows a particular source or mapping: registering one
without its fixture fails the suite on purpose (a source nobody ran end to end is not a source).

Checked for each: the expected events exactly (row, sub-index, fields), the rejects with their
reasons at the record's own row and with its original text, exactly once (listing again finds
nothing new), first copy wins and replay (the same records under another object name add
nothing: derived transaction ids are stable).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import (
    SourceSpec,
    build_source,
    ingest_object,
    plugins,
    register_objects,
)

GOLDEN = Path(__file__).parents[2] / "fixtures" / "golden"
REGISTRY = plugins.registry()


def _events(engine: Engine, object_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                'select row_number, sub_index, transaction_id, external_subscription_id, code,'
                ' "timestamp", properties from events where object_id = :o'
                " order by row_number, sub_index"
            ),
            {"o": object_id},
        ).all()
    return [
        {"row": r[0], "sub": r[1], "transaction_id": r[2], "external_subscription_id": r[3],
         "code": r[4], "timestamp": r[5].isoformat(), "properties": r[6]}
        for r in rows
    ]


def _rejects(engine: Engine, object_id: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            text("select row_number, reason, field, raw from rejected_rows where object_id = :o"
                 " order by row_number, sub_index"),
            {"o": object_id},
        )]


def _check(engine: Engine, spec: SourceSpec, expected: dict[str, Any], lines: list[str]) -> int:
    source = build_source(spec)
    listed = list(source.list())
    assert len(listed) == 1, "exactly the golden object is listed"
    assert [r.version for r in source.list()] == [listed[0].version], "versions are stable"
    (object_id,) = register_objects(engine, source, listed)
    result = ingest_object(engine, source, object_id)
    assert result.status == "ingested", result.error
    assert _events(engine, object_id) == expected["events"]
    rejects = _rejects(engine, object_id)
    assert [(r[0], r[1], r[2]) for r in rejects] == [
        (r["row"], r["reason"], r["field"]) for r in expected["rejects"]
    ]
    # a reject keeps the record as it came, at its own line (a conflicting duplicate keeps
    # the event that was kept out, as a Lago event to fix and replay)
    for row, reason, _field, raw in rejects:
        if reason != "conflicting_duplicate":
            assert raw == lines[row - 1], f"row {row} keeps the original record"
    assert result.accepted == len(expected["events"])
    assert result.duplicates == expected["duplicates"]
    conflicts = sum(r["reason"] == "conflicting_duplicate" for r in expected["rejects"])
    assert (result.rejected, result.conflicts) == (len(expected["rejects"]) - conflicts, conflicts)
    _accounted(engine, result, lines, expected)
    # exactly once: listing again finds nothing to do
    assert register_objects(engine, source, source.list()) == []
    return object_id


def _accounted(engine: Engine, result: Any, lines: list[str], expected: dict[str, Any]) -> None:
    """Every record read is emitted, rejected or empty, and the ledger says the same."""
    records = sum(1 for line in lines if line.strip())
    assert result.records == records
    assert result.records == result.records_emitted + result.rejected + result.records_empty
    assert result.events == result.accepted + result.duplicates + result.conflicts
    # the emitted records are the rows events came from (kept, or kept out as conflicts)
    emitted = {event["row"] for event in expected["events"]} | {
        r["row"] for r in expected["rejects"] if r["reason"] == "conflicting_duplicate"}
    if not expected["duplicates"]:
        assert result.records_emitted == len(emitted)
    with engine.connect() as conn:
        ledger = conn.execute(
            text("select records, records_emitted, records_empty, events, rejected"
                 " from ingest_objects where id = :o"), {"o": result.object_id}).one()
    assert tuple(ledger) == (result.records, result.records_emitted, result.records_empty,
                             result.events, result.rejected)


def _replay(
    engine: Engine, folder: Path, spec: Callable[[Path], SourceSpec | None],
    expected: dict[str, Any],
) -> None:
    """The same records under another object name: nothing new, every event a duplicate."""
    first = next(folder.glob("golden.*"))
    (folder / f"zz-replay{first.suffix}").write_bytes(first.read_bytes())
    again = spec(folder)
    assert again is not None
    source = build_source(again)
    (object_id,) = register_objects(engine, source, source.list())
    result = ingest_object(engine, source, object_id)
    assert result.accepted == 0, "replayed events dedup (derived ids are stable)"
    assert result.conflicts == sum(r["reason"] == "conflicting_duplicate"
                                   for r in expected["rejects"])
    assert result.duplicates == len(expected["events"]) + expected["duplicates"]


MAPPINGS = sorted(REGISTRY.mappings)


def test_every_registered_mapping_ships_a_golden_fixture() -> None:
    missing = [name for name, m in REGISTRY.mappings.items()
               if not (m.golden and m.golden.is_file() and m.expected and m.expected.is_file())]
    assert not missing, f"mapping(s) {missing} need golden records and expected events"


@pytest.mark.parametrize("name", MAPPINGS)
def test_mapping_conformance(engine: Engine, tmp_path: Path, name: str) -> None:
    mapping = REGISTRY.mappings[name]
    assert mapping.golden is not None and mapping.expected is not None
    expected = json.loads(mapping.expected.read_text())
    assert expected["rejects"], f"{name}'s golden records must include a rejected one"
    folder = tmp_path / "bucket"
    folder.mkdir()
    shutil.copy(mapping.golden, folder / f"golden{mapping.golden.suffix}")
    (folder / "_SUCCESS").write_text("")  # marker files in a bucket are not events
    lines = mapping.golden.read_text().splitlines()
    spec = SourceSpec(kind="fsspec", url=folder.as_uri(), mapping=name)
    _check(engine, spec, expected, lines)
    _replay(engine, folder, lambda _folder: spec, expected)


@pytest.mark.parametrize("kind", sorted(REGISTRY.sources))
def test_source_conformance(engine: Engine, tmp_path: Path, kind: str) -> None:
    """Every source kind lists and reads the Lago golden batch with the exact Lago outcome."""
    cls = REGISTRY.sources[kind]
    folder = tmp_path / "bucket"
    folder.mkdir()
    shutil.copy(GOLDEN / "lago.jsonl", folder / "golden.jsonl")
    (folder / "_SUCCESS").write_text("")
    spec = cls.golden_case(folder)
    assert spec is not None, f"source kind {kind!r} needs a golden_case (see docs/ingest.md)"
    expected = json.loads((GOLDEN / "lago.expected.json").read_text())
    lines = (GOLDEN / "lago.jsonl").read_text().splitlines()
    _check(engine, spec, expected, lines)
    _replay(engine, folder, cls.golden_case, expected)
    with engine.connect() as conn:
        medium = conn.execute(
            text("select properties->>'tokens' from events where transaction_id = 'g-3'")
        ).scalar_one()
    assert medium == "0.5"  # exact decimal, not a float


def test_no_plugin_is_broken() -> None:
    assert REGISTRY.broken == [], REGISTRY.broken
