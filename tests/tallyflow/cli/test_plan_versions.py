"""``tallyflow apply --effective-at``, ``catalog versions`` and ``catalog export --at`` through
the real command line."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
MISTRAL = ROOT / "examples" / "mistral"

runner = CliRunner()


def test_versions_effective_at_and_export_at(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    shutil.copytree(MISTRAL, folder)
    assert runner.invoke(app, ["apply", str(folder)]).exit_code == 0
    listed = runner.invoke(app, ["catalog", "versions", "mistral_per_token", "--json"])
    assert listed.exit_code == 0, listed.output
    [first] = json.loads(listed.stdout)["plan_versions"]
    started = datetime.fromisoformat(first["effective_from"])
    plan_file = folder / "plan.json"
    envelope = json.loads(plan_file.read_text())
    envelope["plan"]["amount_cents"] = 999
    plan_file.write_text(json.dumps(envelope))
    later = (started + timedelta(microseconds=10)).isoformat()
    applied = runner.invoke(app, ["apply", str(folder), "--effective-at", later])
    assert applied.exit_code == 0, applied.output
    history = json.loads(runner.invoke(
        app, ["catalog", "versions", "mistral_per_token", "--json"]).stdout)["plan_versions"]
    assert [(v["version"], v["effective_to"]) for v in history] == [(1, later), (2, None)]
    assert history[0]["charge_ids"] == history[1]["charge_ids"]
    table = runner.invoke(app, ["catalog", "versions", "mistral_per_token"])
    assert table.exit_code == 0 and "(current)" in table.stdout

    def amount(at: str) -> list[int]:
        result = runner.invoke(app, ["catalog", "export", "--at", at])
        assert result.exit_code == 0, result.output
        return [e["plan"]["amount_cents"] for e in json.loads(result.stdout) if "plan" in e]

    assert amount(first["effective_from"]) == [0]
    assert amount(later) == [999]
    assert amount("2000-01-01") == []


def test_bad_moments_and_unknown_plans_are_one_line_errors(engine: Engine) -> None:
    bad = runner.invoke(app, ["catalog", "export", "--at", "yesterday"])
    assert bad.exit_code == 2 and "--at 'yesterday' is not an ISO 8601" in bad.stderr
    unknown = runner.invoke(app, ["catalog", "versions", "nope"])
    assert unknown.exit_code == 1 and "no plan 'nope'" in unknown.stderr
    future = runner.invoke(app, ["apply", str(MISTRAL), "--effective-at", "2999-01-01"])
    assert future.exit_code == 1 and "in the future" in future.stderr
