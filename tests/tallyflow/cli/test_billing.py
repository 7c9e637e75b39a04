"""``tallyflow billing run``: an hour billed from the command line is the hour the deployed
``billing-cycle`` flow bills, charges paid in advance, period close and wallet included."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.billing import billing_hour
from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import BillingCycleSummary
from tests.tasks.invoicing.test_invoicing import ingested_until
from tests.tasks.rating_fixtures import MISTRAL, ingest_events, token_event

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()
HOUR = datetime(2025, 4, 1, 8, tzinfo=UTC)  # March's period closes; the watermark is past it
NOW = datetime(2026, 12, 7, 14, 35, tzinfo=UTC)


def _scenario(engine: Engine, folder: Path) -> None:
    """Acme on the Mistral plan (tokens paid in arrears, so deducted hourly) plus a charge
    per API request paid in advance (each event's fee paid from the wallet), with a wallet."""
    from tallyflow.tasks.catalog import apply_catalog

    target = folder / "catalog"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(MISTRAL, target)
    (target / "requests.json").write_text(json.dumps({"billable_metric": {
        "name": "API requests", "code": "requests", "aggregation_type": "count_agg"}}))
    plan = json.loads((target / "plan.json").read_text())
    plan["plan"]["amount_cents"] = 1000
    plan["plan"]["charges"].append({
        "billable_metric_id": "requests", "charge_model": "standard", "pay_in_advance": True,
        "invoiceable": True, "properties": {"amount": "0.25"}})
    (target / "plan.json").write_text(json.dumps(plan))
    subscription = json.loads((target / "subscription.json").read_text())
    subscription["subscription"]["subscription_at"] = "2025-03-01T00:00:00Z"
    (target / "subscription.json").write_text(json.dumps(subscription))
    assert apply_catalog(engine, [target]).ok
    ingest_events(engine, folder, [
        token_event("t1", "2025-03-10T12:00:00Z", 3_000_000),
        token_event("t2", "2025-03-31T23:00:00Z", 1_000_000, kind="output"),
        token_event("t3", "2025-04-01T07:00:00Z", 2_000_000),
        *[{"transaction_id": f"r{n}", "external_subscription_id": "sub_acme_001",
           "code": "requests", "timestamp": f"2025-03-{10 + n}T09:00:00Z", "properties": {}}
          for n in range(4)],
    ])
    ingested_until(engine, HOUR + timedelta(minutes=5))


def _billed(engine: Engine) -> dict[str, Any]:
    """Everything the hour wrote that a customer sees, without run ids and wall-clock times."""
    with engine.connect() as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(text(sql))]

        return {
            "invoices": rows("select number, invoice_type, status, fees_amount_cents,"
                             " prepaid_credit_amount_cents, total_amount_cents from invoices"
                             " order by number"),
            "fees": rows("select i.number, f.item_type, f.code, f.amount_cents, f.units"
                         " from invoice_fees f join invoices i on i.id = f.invoice_id"
                         " order by i.number, f.position"),
            "advance": rows("select transaction_id, amount_cents, billing_hour"
                            " from advance_fees order by transaction_id"),
            "wallet": rows("select direction, source, status, credits, amount_cents,"
                           " idempotency_key from wallet_transactions order by id"),
            "balances": rows("select credits_balance, balance_cents, consumed_credits"
                             " from wallet_balances order by wallet_id"),
            "snapshots": rows("select as_of, amount_cents from usage_snapshots order by id"),
        }


def _reset(engine: Engine) -> None:
    from tallyflow.models.tables import metadata

    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))


def test_billing_run_bills_the_hour_the_deployed_flow_bills(
    engine: Engine, tmp_path: Path
) -> None:
    from tallyflow.deployments.serve import deployment_specs, load_flow

    _scenario(engine, tmp_path)
    result = runner.invoke(app, ["billing", "run", "--at", "2025-04-01T08:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["hour"] == HOUR.isoformat()
    assert mismatches(summary, BillingCycleSummary) == []
    assert summary["advance"]["fees"] == 4 and summary["advance"]["paid_cents"] == "100"
    # March's invoice is finalized in this hour (and the one of the last day of February in
    # acme's zone, where 2025-03-01T00:00Z still falls: a day's prorated fee)
    finalized = summary["invoices"]["finalized_invoices"]
    assert "2025-04-01" in [i["issuing_date"] for i in finalized]
    assert summary["wallets"]["amount_cents_deducted"] != "0"
    by_cli = _billed(engine)
    sources = {(d, s) for d, s, *_ in by_cli["wallet"]}
    assert {("outbound", "usage"), ("outbound", "invoice")} <= sources
    assert [(t, a) for t, a, _ in by_cli["advance"]] == [(f"r{n}", 25) for n in range(4)]
    assert {status for _, kind, status, *_ in by_cli["invoices"] if kind == "subscription"} == {
        "finalized"}

    _reset(engine)
    _scenario(engine, tmp_path)
    (spec,) = [s for s in deployment_specs() if s["name"] == "hourly"]
    load_flow(spec["entrypoint"])(hour=HOUR)
    assert _billed(engine) == by_cli

    # a rerun of the hour from the command line bills nothing again
    again = runner.invoke(app, ["billing", "run", "--at", "2025-04-01T08:00:00Z"])
    assert again.exit_code == 0, again.output
    assert "2025-04-01 08:00" in again.output
    assert _billed(engine) == by_cli


def test_hours_run_in_order_like_the_backfill(engine: Engine, tmp_path: Path) -> None:
    _scenario(engine, tmp_path)
    result = runner.invoke(app, ["billing", "run", "--at", "2025-04-01T06:00:00Z",
                                 "--hours", "3", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    assert [mismatches(r, BillingCycleSummary) for r in results] == [[], [], []]
    hours = [r["hour"] for r in results]
    assert hours == [(HOUR - timedelta(hours=2 - n)).isoformat() for n in range(3)]
    table = runner.invoke(app, ["billing", "run", "--at", "2025-04-01T06:00:00Z",
                                "--hours", "2"])
    assert table.exit_code == 0
    assert "2025-04-01 06:00" in table.output and "2025-04-01 07:00" in table.output


@pytest.mark.parametrize(("given", "hour"), [
    (None, datetime(2026, 12, 7, 14, tzinfo=UTC)),
    ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("2026-11-27T11:00:00+01:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("1796644800", datetime(2026, 12, 7, 12, tzinfo=UTC)),
])
def test_the_hour_given(given: str | None, hour: datetime) -> None:
    assert billing_hour(given, NOW) == hour


@pytest.mark.parametrize(("given", "meant"), [
    ("2026-11-27T10:30:00Z", "2026-11-27T10:00:00Z"),
    ("2026-11-27T10:00:01Z", "2026-11-27T10:00:00Z"),
    ("2026-11-27T10:59:59.999Z", "2026-11-27T10:00:00Z"),
    ("2026-11-27T10:00:00+05:30", "2026-11-27T04:00:00Z"),  # 04:30 UTC
])
def test_a_time_inside_an_hour_is_refused_naming_the_hour(given: str, meant: str) -> None:
    with pytest.raises(typer.BadParameter, match=f"the hour it falls in is {meant}"):
        billing_hour(given, NOW)


def test_the_command_line_refuses_it_before_billing_anything(engine: Engine) -> None:
    result = runner.invoke(app, ["billing", "run", "--at", "2026-11-27T10:30:00Z"])
    assert result.exit_code == 2
    assert "2026-11-27T10:00:00Z" in result.output
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from run_history")).scalar_one() == 0
