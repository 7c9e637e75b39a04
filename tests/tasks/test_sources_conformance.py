"""Every registered source, run against the golden batch: a new source gets this for free.

Adding a source to the registry without a golden case here fails the suite on purpose: a source
nobody has run end to end is not a source.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tasks.ingest import ingest_object, register_objects
from tasks.sources import SOURCES, SourceSpec, build_source

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"
# The golden batch: 3 distinct events, 1 duplicate (first copy wins), 1 timestamp without zone,
# 1 event without external_subscription_id. Expected exactly, whatever the source.
# Row 4 repeats g-1 with other tokens: a conflicting duplicate (kept out, reported), not billed.
EXPECTED = {"rows": 6, "accepted": 3, "duplicates": 0, "conflicts": 1, "rejected": 2}
EXPECTED_REJECTS = [(4, None, "conflicting_duplicate"),
                    (5, "timestamp", "timestamp_without_zone"),
                    (6, "external_subscription_id", "missing_field")]


def _fsspec_case(tmp_path: Path, mapping: str) -> SourceSpec:
    folder = tmp_path / "bucket"
    folder.mkdir()
    shutil.copy(GOLDEN / f"{mapping}.jsonl", folder / "golden.jsonl")
    (folder / "_SUCCESS").write_text("")  # marker files in a bucket are not events
    return SourceSpec(kind="fsspec", url=folder.as_uri(), mapping=mapping)


CASES: dict[str, list[Callable[[Path], SourceSpec]]] = {
    "fsspec": [
        lambda tmp: _fsspec_case(tmp, "lago"),
        lambda tmp: _fsspec_case(tmp, "cloudevents"),
    ],
}


def test_every_registered_source_has_a_golden_case() -> None:
    missing = sorted(set(SOURCES) - set(CASES))
    assert not missing, f"add a golden case for source kind(s) {missing} to CASES"


@pytest.mark.parametrize(
    ("kind", "case"),
    [(kind, i) for kind in sorted(SOURCES) for i in range(len(CASES.get(kind, [])))],
)
def test_source_conformance(engine: Engine, tmp_path: Path, kind: str, case: int) -> None:
    spec = CASES[kind][case](tmp_path)
    source = build_source(spec)
    listed = list(source.list())
    assert len(listed) == 1, "exactly the golden object is listed"
    assert [r.version for r in source.list()] == [listed[0].version], "versions are stable"
    with source.open(listed[0]) as stream:
        assert stream.read(1) == b"{"
    (object_id,) = register_objects(engine, source.key, listed)
    result = ingest_object(engine, source, object_id)
    assert {k: getattr(result, k) for k in EXPECTED} == EXPECTED
    with engine.connect() as conn:
        rejects = conn.execute(
            text("select row_number, field, reason from rejected_rows order by row_number")
        ).all()
        first = conn.execute(
            text(
                "select properties->>'tokens', properties->>'model', \"timestamp\""
                " from events where transaction_id = 'g-1'"
            )
        ).one()
        medium = conn.execute(
            text("select properties->>'tokens' from events where transaction_id = 'g-3'")
        ).scalar_one()
    assert [tuple(r) for r in rejects] == EXPECTED_REJECTS
    assert first[:2] == ("2000000", "mistral-small")  # first copy won
    assert first[2].isoformat() == "2025-11-24T16:00:00+00:00"
    assert medium == "0.5"  # exact decimal, not a float
    assert register_objects(engine, source.key, source.list()) == []
