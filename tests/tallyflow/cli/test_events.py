"""``tallyflow events void|show`` through the CLI: a void by the OS user, re-rated at once; a
rerun is a no-op; refusals and bad selections exit non-zero in one line with a hint."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import VoidSummary
from tests.tasks.corrections.test_voids import NOW, _used
from tests.tasks.rating_fixtures import SUB

runner = CliRunner()
AT = (NOW + timedelta(minutes=20)).isoformat()


def test_void_show_and_refusals(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    done = runner.invoke(app, ["events", "void", "--subscription", SUB, "--transaction-id",
                               "b2", "--reason", "sent twice", "--at", AT])
    assert done.exit_code == 0, done.output
    assert f"voided {SUB}/b2 (event time 2025-03-25T12:00:00+00:00) by {getpass.getuser()}:" \
           " sent twice" in done.stdout
    assert "1 wallet correction(s), 600 cents credited back, 0 cents deducted" in done.stdout

    shown = json.loads(runner.invoke(app, ["events", "show", "--subscription", SUB,
                                           "--transaction-id", "b2", "--json"]).stdout)
    assert shown["status"] == "voided" and shown["row"] == 2
    assert shown["history"][-1]["actor"] == getpass.getuser()
    text_out = runner.invoke(app, ["events", "show", "--subscription", SUB,
                                   "--transaction-id", "b2"]).stdout
    assert f"{SUB}/b2: voided" in text_out and "voided by" in text_out

    again = runner.invoke(app, ["events", "void", "--subscription", SUB, "--transaction-id",
                                "b2", "--reason", "again", "--json"])
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert result["counts"] == {"already_voided": 1}
    assert result["rerate"]["wallet_corrections"] == 0
    assert mismatches(result, VoidSummary) == []

    refused = runner.invoke(app, ["events", "void", "--subscription", SUB, "--transaction-id",
                                  "nope", "--reason", "x"])
    assert refused.exit_code == 1
    assert f"error: not voided {SUB}/nope (not_found)" in refused.stderr
    assert "hint:" in refused.stderr

    with engine.connect() as conn:
        url = conn.execute(text(
            "select o.path from ingest_objects o join events e on e.object_id = o.id"
            " where e.transaction_id = 'a1'")).scalar_one()
    rows = runner.invoke(app, ["events", "void", "--object", url, "--rows", "2", "--reason",
                               "bad batch", "--at", AT, "--json"])
    assert rows.exit_code == 0, rows.output
    assert [e["transaction_id"] for e in json.loads(rows.stdout)["events"]] == ["a2"]
    bad = runner.invoke(app, ["events", "void", "--object", url, "--rows", "3-1",
                              "--reason", "x"])
    assert bad.exit_code == 2 and "--rows" in bad.stderr
    neither = runner.invoke(app, ["events", "void", "--reason", "x"])
    assert neither.exit_code == 2 and "say which events" in neither.stderr
    missing = runner.invoke(app, ["events", "show", "--subscription", SUB,
                                  "--transaction-id", "nope"])
    assert missing.exit_code == 1 and "no event" in missing.stderr
