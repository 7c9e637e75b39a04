"""``tallyflow reingest``: the fix of a mapping file noticed by ``ingest`` and replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.flows.test_replay import MAPPING, RECORDS

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ingest_notices_and_reingest_replays_one_object(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("logs").mkdir()
    for name in ("a", "b"):
        Path(f"logs/{name}.jsonl").write_text(
            "".join(json.dumps({**r, "id": f"{name}{r['id']}"}) + "\n" for r in RECORDS))
    Path("m.yaml").write_text(MAPPING % "completion")
    args = ["ingest", "logs", "--mapping", "m.yaml", "--json"]
    assert _json(runner.invoke(app, args))["accepted"] == 6
    Path("m.yaml").write_text(MAPPING % "completion_tokens")
    noticed = runner.invoke(app, args[:-1])
    assert noticed.exit_code == 0, noticed.output
    assert "2 object(s) were read with other settings" in " ".join(noticed.output.split())

    both = runner.invoke(app, ["reingest", "logs", "--mapping", "m.yaml", "--object",
                               "logs/a.jsonl", "--since", "2020-01-01T00:00:00Z"])
    assert both.exit_code == 2 and "two ways" in both.output

    one = runner.invoke(app, ["reingest", "logs", "--mapping", "m.yaml", "--object",
                              "logs/a.jsonl"])
    assert one.exit_code == 0, one.output
    assert ("replayed 1 object(s): 1 record(s) unchanged, 2 replaced (0 old event(s) voided), "
            "0 kept") in " ".join(one.output.split())
    with engine.connect() as conn:
        outputs = sorted(conn.execute(text(
            "select transaction_id from events where transaction_id like '%output'")).scalars())
    assert outputs == ["au-1:output", "au-3:output"]  # b.jsonl waits for its own replay
    assert _json(runner.invoke(app, args))["other_settings"] == 1
    rest = _json(runner.invoke(app, ["reingest", "logs", "--mapping", "m.yaml", "--json"]))
    assert rest["replay"]["records_replaced"] == 2 and rest["accepted"] == 2
    assert _json(runner.invoke(app, args))["other_settings"] == 0
