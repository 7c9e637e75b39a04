"""Choosing and configuring sources and mappings from the CLI; the ledger remembers them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.flows.ingest import reingest_object
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import SourceRegistry
from tallyflow.tasks.ingest import plugins
from tests.tasks.ingest.test_plugins import guide_files

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()
MAPPINGS = Path(__file__).parents[3] / "tasks" / "ingest" / "mappings"
# The OpenAI-style records: one record -> an input and an output event.
RECORDS = [
    {"id": "r-1", "model": "gpt-4o", "created": 1764000000, "user": "sub_a",
     "usage": {"prompt_tokens": 10, "completion_tokens": 4}},
    {"id": "r-2", "model": "gpt-4o", "created": 1764000060, "user": "sub_b",
     "usage": {"prompt_tokens": 3, "completion_tokens": 0}},
    {"id": "r-3", "model": "gpt-4o", "created": 1764000120,
     "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
]


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("error:", "hint:"))]


def test_ingest_with_the_guide_s_mapping_file(engine: Engine, tmp_path: Path) -> None:
    mapping = tmp_path / "openai_usage.yaml"
    mapping.write_text(guide_files()["openai_usage.yaml"])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    summary = _summary(runner.invoke(app, ["ingest", str(logs), "--mapping", str(mapping),
                                           "--json"]))
    assert (summary["accepted"], summary["rejected"]) == (3, 1)
    with engine.connect() as conn:
        events = conn.execute(text(
            "select row_number, sub_index, transaction_id, properties->>'type',"
            " properties->>'tokens' from events order by row_number, sub_index")).all()
        reject = conn.execute(text("select row_number, reason, field from rejected_rows")).one()
    assert [tuple(e) for e in events] == [
        (1, 0, "r-1:input", "input", "10"), (1, 1, "r-1:output", "output", "4"),
        (2, 0, "r-2:input", "input", "3"),
    ]
    assert tuple(reject) == (3, "missing_field", "user")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\ntransaction_id: id\ncode: {const: c}\n",
         "external_subscription_id: Field required"),
        ("name: x\ntransaction_id: id\nexternal_subscription_id: u\ncode: {const: c}\n"
         "each: {fields: {}}\n", "each.fields: Dictionary should have at least 1 item"),
        ("name: x\ntransaction_id: id\nexternal_subscription_id: u\ncode: {const: c}\n"
         "propertys: {a: b}\n", "propertys: Extra inputs are not permitted"),
        ("name: [unclosed\n", "not valid yaml"),
    ],
)
def test_a_wrong_mapping_file_is_one_line_naming_the_file_and_place(
    engine: Engine, tmp_path: Path, content: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TALLYFLOW_DEBUG", raising=False)  # another test's --debug
    mapping = tmp_path / "m.yaml"
    mapping.write_text(content)
    result = runner.invoke(app, ["ingest", str(tmp_path), "--mapping", str(mapping)])
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert len(lines) == 2 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {mapping}: ")
    assert message.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--option", "nope=1"], 1, "source 'fsspec' options: nope: Extra inputs"),
        (["--option", "block_size=12"], 1, "block_size: Input should be greater than or equal"),
        (["--option", "endpoint_url"], 2, "--option 'endpoint_url' is not key=value"),
        (["--mapping", "openai-chat", "--mapping-option", "colour=red"], 1,
         "mapping 'openai-chat' options: colour: Extra inputs"),
        (["--mapping-option", "code=x"], 1, "mapping 'lago' options: code: Extra inputs"),
        (["--source", "kafka"], 2, "unknown --source 'kafka'"),
    ],
)
def test_options_are_checked_by_name_before_any_run(
    engine: Engine, tmp_path: Path, args: list[str], code: int, message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TALLYFLOW_DEBUG", raising=False)  # another test's --debug
    result = runner.invoke(app, ["ingest", str(tmp_path), *args])
    assert result.exit_code == code, result.output
    lines = _lines(result.output)
    assert len(lines) == 2 and message in lines[0], result.output


def test_builtin_llm_mapping_with_a_mapping_option(engine: Engine, tmp_path: Path) -> None:
    golden = (MAPPINGS / "anthropic_messages.golden.jsonl").read_text().splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(golden[:2]) + "\n")  # 4 events, 1 reject
    summary = _summary(runner.invoke(app, [
        "ingest", str(tmp_path), "--mapping", "anthropic-messages",
        "--mapping-option", "code=mistral_tokens", "--json"]))
    assert (summary["accepted"], summary["rejected"]) == (4, 1)
    with engine.connect() as conn:
        codes = conn.execute(text("select distinct code from events")).scalars().all()
        types = conn.execute(text(
            "select properties->>'type' from events order by sub_index")).scalars().all()
    assert codes == ["mistral_tokens"]
    assert types == ["input", "cache_read", "cache_write", "output"]


def test_sources_list_shows_kinds_mappings_and_options() -> None:
    result = runner.invoke(app, ["sources", "list", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert mismatches(described, SourceRegistry) == []
    assert {s["kind"] for s in described["sources"]} == set(plugins.sources())
    fsspec = next(s for s in described["sources"] if s["kind"] == "fsspec")
    assert "endpoint_url" in {o["name"] for o in fsspec["options"]}
    names = {m["name"]: m for m in described["mappings"]}
    assert {"lago", "cloudevents", "openai-chat", "openai-responses", "openai-batch",
            "anthropic-messages", "mistral-chat"} <= set(names)
    assert {o["name"] for o in names["openai-chat"]["options"]} >= {"code",
                                                                    "external_subscription_id"}
    text_output = runner.invoke(app, ["sources", "list"])
    assert text_output.exit_code == 0 and "openai-batch" in text_output.output


def test_the_ledger_knows_its_source_and_reingest_uses_it(engine: Engine, tmp_path: Path) -> None:
    """Two sources read one folder: each has its own ledger rows; re-ingesting an object reads
    it the way it was read (with its mapping), so its events count once."""
    golden = (MAPPINGS / "openai_chat.golden.jsonl").read_text().splitlines()
    (tmp_path / "chat.jsonl").write_text("\n".join(golden[:5]) + "\n")
    first = _summary(runner.invoke(app, ["ingest", str(tmp_path), "--mapping", "openai-chat",
                                         "--json"]))
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (5, 3, 2)
    # the same folder, read as Lago events by the default source: its own ledger entry
    lago = _summary(runner.invoke(app, ["ingest", str(tmp_path), "--json"]))
    assert (lago["objects"], lago["accepted"], lago["rejected"]) == (1, 0, 5)
    with engine.connect() as conn:
        ledger = conn.execute(text(
            "select source, source_kind, source_spec->>'mapping' from ingest_objects"
            " order by id")).all()
    url = (tmp_path / "chat.jsonl").as_uri()
    folder = tmp_path.as_uri()
    assert [tuple(r) for r in ledger] == [
        (f"fsspec+openai-chat:{folder}", "fsspec", "openai-chat"),
        (folder, "fsspec", "lago"),
    ]
    with engine.begin() as conn:  # the Lago reading is the wrong one: forget it
        conn.execute(text("delete from ingest_objects where source = :s"), {"s": folder})
    again = reingest_object(url)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 8, 2)
