"""LLM usage through ingestion: Bedrock's own invocation logs (gzip, one record per line, named
.json.gz) load; a usage field no mapping knows is billed around and counted per object and run;
a strict mapping rejects the record instead."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import SourceSpec, build_source
from tallyflow.tasks.ingest.load import (
    finish_run,
    ingest_object,
    register_objects,
    start_run,
    summarise,
)
from tallyflow.tasks.ingest.mappings import HERE, load_file


def _ingest(engine: Engine, folder: Path, mapping: str, **options: Any) -> Any:
    source = build_source(SourceSpec(url=folder.as_uri(), mapping=mapping,
                                     mapping_options=options))
    (object_id,) = register_objects(engine, source, source.list())
    return ingest_object(engine, source, object_id)


def test_bedrock_invocation_logs_as_bedrock_writes_them(engine: Engine, tmp_path: Path) -> None:
    lines = (HERE / "bedrock_invocation_log.golden.jsonl").read_bytes()
    (tmp_path / "1234_bedrock_log_0001.json.gz").write_bytes(gzip.compress(lines))
    result = _ingest(engine, tmp_path, "bedrock-invocation-log")
    assert result.status == "ingested", result.error
    assert (result.accepted, result.rejected) == (7, 1)
    with engine.connect() as conn:
        tokens = dict(conn.execute(text(
            "select properties->>'type', sum((properties->>'tokens')::int) from events"
            " group by 1")).all())
    assert tokens == {"input": 55, "cache_read": 200, "cache_write": 500, "cache_write_1h": 1000,
                      "output": 496}


def _chat(n: int, usage: dict[str, Any]) -> str:
    return json.dumps({"id": f"chatcmpl-{n}", "user": "sub_acme", "created": 1764000000 + n,
                       "model": "gpt-4o", "usage": usage})


def test_unknown_usage_fields_are_counted_per_object_and_run(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join([
        _chat(1, {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {
            "image_tokens": 4}}),
        _chat(2, {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {
            "image_tokens": 4}, "surprise_tokens": 2}),
        _chat(3, {"prompt_tokens": 10, "completion_tokens": 1}),
    ]) + "\n")
    result = _ingest(engine, tmp_path, "openai-chat")
    assert (result.accepted, result.rejected) == (6, 0)  # every record still bills input/output
    assert result.unmapped_usage_fields == {
        "usage.prompt_tokens_details.image_tokens": 2, "usage.surprise_tokens": 1}
    assert summarise([result, result])["unmapped_usage_fields"] == {
        "usage.prompt_tokens_details.image_tokens": 4, "usage.surprise_tokens": 2}


def test_a_strict_mapping_file_rejects_the_record(engine: Engine, tmp_path: Path) -> None:
    text_ = (HERE / "openai_chat.yaml").read_text().replace(
        "name: openai-chat", "name: openai-chat-strict\nstrict: true")
    text_ = "\n".join(line for line in text_.splitlines()
                      if not line.startswith(("golden:", "expected:")))
    (tmp_path / "strict.yaml").write_text(text_)
    assert load_file(tmp_path / "strict.yaml").spec.strict
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text(_chat(1, {"prompt_tokens": 3, "new_tokens": 1}) + "\n"
                                  + _chat(2, {"prompt_tokens": 3}) + "\n")
    result = _ingest(engine, data, str(tmp_path / "strict.yaml"))
    assert (result.accepted, result.rejected) == (1, 1)
    with engine.connect() as conn:
        reason, field = conn.execute(text("select reason, field from rejected_rows")).one()
    assert (reason, field) == ("unmapped_usage_field", "usage.new_tokens")


def test_a_path_no_record_matches_is_reported(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(_chat(1, {"prompt_tokens": 10, "completion_tokens": 1})
                                      + "\n")
    result = _ingest(engine, tmp_path, "openai-chat",
                     external_subscription_id="metadata.customer|user")
    assert result.accepted == 2
    assert "usage.prompt_tokens_details.cached_tokens" in result.paths_never_matched
    assert "usage.prompt_tokens" not in result.paths_never_matched
    assert "metadata.customer|user" not in result.paths_never_matched  # one alternative did
    never = summarise([result])["paths_never_matched"]
    assert never["usage.completion_tokens_details.audio_tokens"] == 1


def test_the_mapping_report_is_kept_with_the_object_and_the_run(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_text(_chat(1, {"prompt_tokens": 10, "completion_tokens": 1,
                                                "surprise_tokens": 2}) + "\n")
    source = build_source(SourceSpec(url=tmp_path.as_uri(), mapping="openai-chat"))
    run_id = start_run(engine, source.key, None)
    (object_id,) = register_objects(engine, source, source.list())
    result = ingest_object(engine, source, object_id, run_id)
    finish_run(engine, run_id, [result], 0.1)
    with engine.connect() as conn:
        kept = conn.execute(text(
            "select unmapped_usage_fields, paths_never_matched from ingest_objects")).one()
        run = conn.execute(text(
            "select unmapped_usage_fields, paths_never_matched from ingest_runs")).one()
    assert kept[0] == {"usage.surprise_tokens": 1} == run[0]
    assert "usage.prompt_tokens_details.cached_tokens" in kept[1]
    assert run[1]["usage.prompt_tokens_details.cached_tokens"] == 1
