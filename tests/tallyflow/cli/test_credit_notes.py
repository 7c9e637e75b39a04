"""``tallyflow credit-notes``: estimate, create, show, list, void and the document, on a
finalized invoice (the amounts' rules: tests/models/test_credit_notes.py)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import CreditNote
from tests.tasks.corrections.test_credit_notes import _fee, _finalized

runner = CliRunner()


def test_credit_notes_from_the_command_line(engine: Engine, tmp_path: Path) -> None:
    invoice = _finalized(engine, tmp_path, wallet=False)
    item = f"{_fee(invoice, 'charge', 600)}:500"
    estimated = runner.invoke(app, ["credit-notes", "estimate", invoice["number"],
                                    "--item", item])
    assert estimated.exit_code == 0, estimated.output
    assert "at most 6.00 USD creditable" in estimated.stdout
    made = runner.invoke(app, ["credit-notes", "create", invoice["number"], "--item", item,
                               "--credit", "600", "--json"])
    assert made.exit_code == 0, made.output
    note = json.loads(made.stdout)["credit_note"]
    assert mismatches(note, CreditNote) == []
    shown = runner.invoke(app, ["credit-notes", "show", note["number"]])
    assert "credit 6.00 USD (available" in shown.stdout
    assert note["number"] in runner.invoke(app, ["credit-notes", "list"]).stdout
    wrote = runner.invoke(app, ["credit-notes", "html", note["number"], "-o",
                                str(tmp_path / "cn.html")])
    assert wrote.exit_code == 0 and note["number"] in (tmp_path / "cn.html").read_text()
    assert "voided" in runner.invoke(app, ["credit-notes", "void", note["number"]]).stdout
    again = runner.invoke(app, ["credit-notes", "void", note["number"]])
    assert again.exit_code == 1 and "no_voidable_amount" in again.output
    # a voided note's items stay credited (Lago): 100 cents of the fee are left
    rest = item.replace(":500", ":100")
    too_much = runner.invoke(app, ["credit-notes", "create", invoice["number"], "--item", rest,
                                   "--credit", "900"])
    assert too_much.exit_code == 1 and "does_not_match_item_amounts" in too_much.output
