"""``tallyflow mappings preview``: a mapping tried on an object, events and rejects shown,
nothing written; a mapping file's bad path is refused with its line and column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.ingest.mappings import HERE

runner = CliRunner()


def test_preview_shows_the_events_and_rejects_of_the_first_rows(tmp_path: Path) -> None:
    data = tmp_path / "spend.jsonl"
    shutil.copy(HERE / "litellm_spend.golden.jsonl", data)
    result = runner.invoke(app, ["mappings", "preview", "litellm-spend", str(data),
                                 "--rows", "2", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["records"] == 2
    assert [e["transaction_id"] for e in found["events"]] == ["chatcmpl-9f1:input",
                                                             "chatcmpl-9f1:output"]
    assert [(r["row"], r["reason"]) for r in found["rejects"]] == [(2, "empty_value")]
    assert "metadata.usage_object.prompt_tokens_details.cached_tokens" in found[
        "paths_never_matched"]


def test_preview_takes_a_mapping_file_and_options(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: mine\ntransaction_id: id\nexternal_subscription_id: who\ncode: {const: c}\n"
        "timestamp: at\nusage: [n]\neach:\n  fields:\n    input: n.in\n")
    (tmp_path / "d.jsonl").write_text(json.dumps(
        {"id": "1", "who": "s", "at": "2025-11-24 16:00:00", "n": {"in": 3, "new": 1}}) + "\n")
    args = ["mappings", "preview", str(tmp_path / "m.yaml"), str(tmp_path / "d.jsonl"), "--json"]
    refused = json.loads(runner.invoke(app, args).stdout)
    assert [r["reason"] for r in refused["rejects"]] == ["timestamp_without_zone"]
    zoned = json.loads(runner.invoke(app, [*args, "--mapping-option", "timezone=UTC"]).stdout)
    assert [(e["timestamp"], e["properties"]["tokens"]) for e in zoned["events"]] == [
        ("2025-11-24T16:00:00+00:00", 3)]
    assert zoned["unmapped_usage_fields"] == {"n.new": 1}


def test_a_bad_path_is_refused_with_its_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: mine\ntransaction_id: id\nexternal_subscription_id: who\ncode: {const: c}\n"
        "each:\n  fields:\n    input: usage..in\n")
    (tmp_path / "d.jsonl").write_text("{}\n")
    result = runner.invoke(app, ["mappings", "preview", str(tmp_path / "m.yaml"),
                                 str(tmp_path / "d.jsonl")])
    assert result.exit_code != 0
    assert "each.fields.input" in result.output and "line 7, column 12" in result.output
    assert "empty step" in result.output
