"""Fix and replay (issue 26 item 3): a mapping fix is noticed, and ``reingest-source`` replaces
what each record gave before with what it gives now -- exactly the affected events, voided
and stored, with counts; a plain re-run keeps first-copy-wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import ingest_events, reingest_source
from tallyflow.tasks.ingest import SourceSpec

pytestmark = pytest.mark.usefixtures("prefect_harness")

MAPPING = """\
name: gateway-usage
transaction_id: id
external_subscription_id: user
timestamp: created
code: {const: llm_tokens}
request_id: id
properties:
  model: model
each:
  fields:
    input: usage.prompt_tokens
    output: usage.%s
"""
RECORDS = [
    {"id": "u-1", "model": "m", "created": 1764000000, "user": "sub_a",
     "usage": {"prompt_tokens": 100, "completion_tokens": 20}},
    {"id": "u-2", "model": "m", "created": 1764000060, "user": "sub_a",
     "usage": {"prompt_tokens": 7, "completion_tokens": 0}},
    {"id": "u-3", "model": "m", "created": 1764000120, "user": "sub_a",
     "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
]


def _live(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.transaction_id: int(r.properties["tokens"]) for r in conn.execute(text(
            "select transaction_id, properties from events where voided_at is null"))}


def _setup(tmp_path: Path) -> tuple[Path, SourceSpec]:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    mapping = tmp_path / "gateway.yaml"
    mapping.write_text(MAPPING % "completion")  # the bug: no such field, no output events
    return mapping, SourceSpec(url=logs.as_uri(), mapping=str(mapping))


def test_a_mapping_fix_replays_exactly_the_affected_events(
    engine: Engine, tmp_path: Path
) -> None:
    mapping, spec = _setup(tmp_path)
    first = ingest_events(spec)
    assert first["accepted"] == 3 and first["other_settings"] == 0
    assert _live(engine) == {"u-1:input": 100, "u-2:input": 7, "u-3:input": 5}

    mapping.write_text(MAPPING % "completion_tokens")  # the fix
    noticed = ingest_events(spec)
    assert (noticed["objects"], noticed["other_settings"]) == (0, 1)  # read 0, said so
    assert len(_live(engine)) == 3  # a plain run reads nothing again

    replay = reingest_source(spec)
    counts = {k: v for k, v in replay["replay"].items() if k not in ("kept", "rerate")}
    # u-1 and u-3 gain their output events; their input events are the same and stand;
    # u-2 (no completion tokens) gives what it gave
    assert counts == {"objects": 1, "records_unchanged": 1, "records_replaced": 2,
                      "records_kept": 0, "events_voided": 0, "events_renamed": 0}
    assert (replay["accepted"], replay["duplicates"]) == (2, 3)
    assert _live(engine) == {"u-1:input": 100, "u-1:output": 20, "u-2:input": 7,
                             "u-3:input": 5, "u-3:output": 3}
    # settled: nothing read with other settings, and a second replay changes nothing
    assert ingest_events(spec)["other_settings"] == 0
    again = reingest_source(spec)
    assert again["replay"]["objects"] == 0 and again["objects"] == 0
    assert len(_live(engine)) == 5


def test_a_changed_value_is_voided_and_stored_again_under_a_replay_key(
    engine: Engine, tmp_path: Path
) -> None:
    mapping, spec = _setup(tmp_path)
    mapping.write_text(MAPPING % "completion_tokens")
    ingest_events(spec)
    # the fix: input is the prompt minus nothing, but the code was wrong -> every event
    # of u-1 and u-3 changes its properties (model now from another path)
    mapping.write_text((MAPPING % "completion_tokens").replace("model: model",
                                                               "model: {const: m2}"))
    replay = reingest_source(spec)
    r = replay["replay"]
    assert (r["records_unchanged"], r["records_replaced"], r["events_voided"],
            r["events_renamed"]) == (0, 3, 5, 5)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "select e.transaction_id, e.voided_at is not null as voided, e.properties->>'model'"
            " as model, v.reason from events e left join event_voids v using"
            " (external_subscription_id, transaction_id) order by e.id")).all()
        owners = conn.execute(text(
            "select r.request_id, r.object_id, o.version from event_requests r"
            " join ingest_objects o on o.id = r.object_id order by 1")).all()
    voided = [t for t, v, m, _ in rows if v]
    live = {t: m for t, v, m, _ in rows if not v}
    assert sorted(voided) == ["u-1:input", "u-1:output", "u-2:input", "u-3:input",
                              "u-3:output"]
    new_id = next(iter(live)).rsplit("~replay-", 1)[1]
    assert live == {f"{t}~replay-{new_id}": "m2" for t in voided}
    assert all("replayed under other settings" in (reason or "") for *_, v, _m, reason in
               [(r[0], r[1], r[2], r[3]) for r in rows] if v)
    # each request is owned by the record that bills it now
    assert [(req, str(obj)) for req, obj, _ in owners] == [
        ("u-1", new_id), ("u-2", new_id), ("u-3", new_id)]


def test_a_failed_object_is_retried_with_the_run_s_format_and_options_are_not_settings(
    engine: Engine, tmp_path: Path
) -> None:
    from tests.factories import event, jsonl

    (tmp_path / "lines.parquet").write_text(jsonl([event(i) for i in range(3)]))  # misnamed
    with pytest.raises(Exception, match="failed"):
        ingest_events(SourceSpec(url=tmp_path.as_uri()))
    fixed = ingest_events(SourceSpec(url=tmp_path.as_uri(), format="jsonl"))
    assert (fixed["objects"], fixed["failed_objects"], fixed["accepted"]) == (1, 0, 3)
    with engine.connect() as conn:
        assert conn.execute(text("select format, source_spec->>'format' from ingest_objects"
                                 )).one() == ("jsonl", "jsonl")
    # how objects are reached is not what they give: no other settings, nothing to replay
    reached = SourceSpec(url=tmp_path.as_uri(), format="jsonl",
                         options={"block_size": 1 << 20})
    assert ingest_events(reached)["other_settings"] == 0
    assert reingest_source(reached)["replay"]["objects"] == 0
    # the format is: the object counts as read with other settings under auto
    assert ingest_events(SourceSpec(url=tmp_path.as_uri()))["other_settings"] == 1


def test_min_age_leaves_an_object_being_written_for_a_later_run(
    engine: Engine, tmp_path: Path
) -> None:
    import os
    import time

    from tests.factories import event, jsonl

    (tmp_path / "old.jsonl").write_text(jsonl([event(1)]))
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / "old.jsonl", (an_hour_ago, an_hour_ago))
    (tmp_path / "writing.jsonl").write_text(jsonl([event(2)])[:20])  # half written, just now
    spec = SourceSpec(url=tmp_path.as_uri(), options={"min_age": 600})
    first = ingest_events(spec)
    assert (first["objects"], first["accepted"], first["rejected"]) == (1, 1, 0)
    (tmp_path / "writing.jsonl").write_text(jsonl([event(2)]))
    os.utime(tmp_path / "writing.jsonl", (an_hour_ago, an_hour_ago))
    second = ingest_events(spec)
    assert (second["objects"], second["accepted"], second["rejected"]) == (1, 1, 0)


def test_a_half_written_object_s_reject_is_resolved_by_its_complete_version(
    engine: Engine, tmp_path: Path
) -> None:
    from tests.factories import event, jsonl

    whole = jsonl([event(1), event(2)])
    (tmp_path / "a.jsonl").write_text(whole[: len(whole) - 30])  # the writer is not done
    spec = SourceSpec(url=tmp_path.as_uri())
    assert ingest_events(spec)["rejected"] == 1  # the truncated last record

    def statuses() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "select reason, status from rejected_rows order by id"))]

    assert statuses() == [("invalid_json", "open")]
    (tmp_path / "a.jsonl").write_text(whole + "not json\n")  # complete, and one bad line
    assert ingest_events(spec)["accepted"] == 1
    assert statuses() == [("invalid_json", "resolved"), ("invalid_json", "open")]
