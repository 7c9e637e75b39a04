"""``tallyflow subscriptions show|terminate`` and what ``tallyflow usage`` says about a pending
or terminated subscription, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import CreditNote
from tallyflow.models.lago.results import SubscriptionTermination
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

runner = CliRunner()


def _start(doc: dict[str, Any]) -> None:
    doc["subscription_at"] = "2025-03-05T05:00:00Z"


def test_pending_terminate_and_usage(engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path, subscription=_start)
    ingest_events(engine, tmp_path, [
        token_event("early", "2025-03-02T00:00:00Z", 1_000_000),
        token_event("in", "2025-03-10T00:00:00Z", 1_000_000),
        token_event("after", "2025-03-25T00:00:00Z", 1_000_000),
    ])
    pending = runner.invoke(app, ["usage", SUB, "--at", "2025-03-03T00:00:00Z"])
    assert pending.exit_code == 0, pending.output
    assert "is pending: it starts at 2025-03-05T05:00:00+00:00" in pending.stdout
    assert "1 event(s) before its start are unbillable" in pending.stdout
    as_json = runner.invoke(app, ["usage", SUB, "--at", "2025-03-03T00:00:00Z", "--json"])
    assert json.loads(as_json.stdout)["status"] == "pending"

    done = runner.invoke(app, ["subscriptions", "terminate", SUB, "--at",
                               "2025-03-20T12:00:00Z", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["status"] == "terminated" and result["final_snapshot_cents"] == 100
    [invoice] = result["invoices"]
    assert invoice["to_datetime"] == "2025-03-20T12:00:00+00:00"

    shown = runner.invoke(app, ["subscriptions", "show", SUB, "--json"])
    assert json.loads(shown.stdout) == {
        "external_id": SUB, "status": "terminated",
        "subscription_at": "2025-03-05T05:00:00+00:00",
        "terminated_at": "2025-03-20T12:00:00+00:00",
        "unbillable_events_before_start": 1, "unbillable_events_after_end": 1,
    }
    usage = runner.invoke(app, ["usage", SUB])
    assert usage.exit_code == 0, usage.output
    assert "is terminated (at 2025-03-20T12:00:00+00:00)" in usage.stdout
    assert "1.00 USD" in usage.stdout  # only the event inside its life

    again = runner.invoke(app, ["subscriptions", "terminate", SUB, "--at",
                                "2025-03-19T00:00:00Z"])
    assert again.exit_code == 1
    assert "already terminated" in again.stderr
    assert "rerun with --at 2025-03-20T12:00:00+00:00" in again.stderr
    unknown = runner.invoke(app, ["subscriptions", "terminate", "sub_nobody"])
    assert unknown.exit_code == 1 and "unknown subscription 'sub_nobody'" in unknown.stderr


def test_change_plan(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    apply_mistral(engine, tmp_path, subscription=_start)
    plan = json.loads((tmp_path / "catalog" / "plan.json").read_text())
    plan["plan"].update({"code": "pro", "amount_cents": 10_000})
    (tmp_path / "pro.json").write_text(json.dumps(plan))
    assert apply_catalog(engine, [tmp_path / "pro.json"]).ok
    done = runner.invoke(app, ["subscriptions", "change-plan", SUB, "pro", "--at",
                               "2025-03-20T12:00:00Z", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert (result["kind"], result["plan_code"], result["effective_at"]) == (
        "upgrade", "pro", "2025-03-20T12:00:00+00:00")
    again = runner.invoke(app, ["subscriptions", "change-plan", SUB, "pro"])
    assert again.exit_code == 1 and "already on that plan" in again.stderr
    unknown = runner.invoke(app, ["subscriptions", "change-plan", SUB, "nope"])
    assert unknown.exit_code == 1 and "unknown plan 'nope'" in unknown.stderr


def test_terminating_a_plan_paid_in_advance_credits_the_unused_days(
    engine: Engine, tmp_path: Path
) -> None:
    """No --on-termination-credit-note: Lago's default, credit
    (spec/services/subscriptions/terminate_service_spec.rb, [nil, "", "credit"]); skip says
    the fee is not credited back."""
    def in_advance(doc: dict[str, Any]) -> None:
        doc.update({"pay_in_advance": True, "amount_cents": 3100})

    apply_mistral(engine, tmp_path, subscription=_start, plan=in_advance)
    done = runner.invoke(app, ["subscriptions", "terminate", SUB, "--at",
                               "2025-03-20T12:00:00Z"])
    assert done.exit_code == 0, done.output
    assert "for the unused days (credit" in done.stdout
    assert "not credited back" not in done.stdout
    as_json = runner.invoke(app, ["subscriptions", "terminate", SUB, "--at",
                                  "2025-03-20T12:00:00Z", "--json"])
    out = json.loads(as_json.stdout)
    assert out["advance_fee_not_credited"] is False and out["credit_note"] is not None
    assert mismatches(out, SubscriptionTermination) == []
    assert mismatches(out["credit_note"], CreditNote) == []
    skipped = runner.invoke(app, ["subscriptions", "terminate", SUB, "--at",
                                  "2025-03-20T12:00:00Z", "--on-termination-credit-note",
                                  "skip"])
    assert "the fee billed at the period's start is not credited back" in skipped.stdout


def test_terminating_a_pending_subscription_cancels_it(engine: Engine, tmp_path: Path) -> None:
    def later(doc: dict[str, Any]) -> None:
        doc["subscription_at"] = "2999-01-01T00:00:00Z"

    apply_mistral(engine, tmp_path, subscription=later)
    done = runner.invoke(app, ["subscriptions", "terminate", SUB])
    assert done.exit_code == 0, done.output
    assert f"{SUB} canceled at " in done.stdout and "it never bills" in done.stdout
    again = runner.invoke(app, ["subscriptions", "terminate", SUB])
    assert again.exit_code == 1 and "was canceled" in again.stderr
    assert "apply a subscription with this external_id" in again.stderr


def test_change_plan_after_ending_at_passed_refuses_or_finishes_in_one_line(
    engine: Engine, tmp_path: Path
) -> None:
    """Issue 27, item 7a: no ValueError after a committed change. At a moment after the end:
    one line with a hint, nothing written; backdated inside the life: the upgrade is done."""
    from tallyflow.tasks.catalog import apply_catalog

    def ended(doc: dict[str, Any]) -> None:
        doc.update(subscription_at="2025-03-05T05:00:00Z", ending_at="2025-03-25T12:00:00Z")

    apply_mistral(engine, tmp_path, subscription=ended)
    plan = json.loads((tmp_path / "catalog" / "plan.json").read_text())
    plan["plan"].update({"code": "pro", "amount_cents": 10_000})
    (tmp_path / "pro.json").write_text(json.dumps(plan))
    assert apply_catalog(engine, [tmp_path / "pro.json"]).ok
    refused = runner.invoke(app, ["subscriptions", "change-plan", SUB, "pro"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "it ended at 2025-03-25T12:00:00+00:00" in refused.stderr
    assert "apply a new subscription instead" in refused.stderr
    done = runner.invoke(app, ["subscriptions", "change-plan", SUB, "pro", "--at",
                               "2025-03-20T12:00:00Z", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["kind"] == "upgrade"
