"""``tallyflow coupons list|apply|applied|terminate|unapply`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.catalog import apply_catalog
from tests.tasks.rating_fixtures import apply_mistral

runner = CliRunner()


def test_coupons_commands(engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    path = tmp_path / "coupons.json"
    path.write_text(json.dumps([{"coupon": {
        "code": "launch", "name": "Launch", "coupon_type": "percentage",
        "percentage_rate": "12.50", "frequency": "recurring", "frequency_duration": 3,
        "expiration": "no_expiration"}}]))
    assert apply_catalog(engine, [path]).ok
    done = runner.invoke(app, ["coupons", "apply", "acme", "launch", "--frequency-duration",
                               "2", "--json"])
    assert done.exit_code == 0, done.output
    applied = json.loads(done.stdout)
    assert (applied["percentage_rate"], applied["frequency_duration_remaining"]) == ("12.5", 2)
    assert "launch" in runner.invoke(app, ["catalog", "show"]).stdout
    listed = json.loads(runner.invoke(app, ["coupons", "list", "--json"]).stdout)
    assert [(c["code"], c["applied"]) for c in listed] == [("launch", 1)]
    text = runner.invoke(app, ["coupons", "applied", "--customer", "acme"]).stdout
    assert "launch: active (recurring, 2 invoice(s) left)" in text
    assert runner.invoke(app, ["coupons", "unapply", applied["lago_id"]]).exit_code == 0
    assert runner.invoke(app, ["coupons", "terminate", "launch"]).exit_code == 0
    refused = runner.invoke(app, ["coupons", "apply", "acme", "launch"])
    assert refused.exit_code == 1 and "terminated or expired" in refused.output
