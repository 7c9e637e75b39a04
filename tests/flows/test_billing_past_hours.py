"""Past hours said plainly: a rerun or a backfill of hour H stores H's snapshot and reports
H's subscriptions and amounts; a re-rate posts the wallet difference in the same run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.billing import billing_backfill, billing_cycle, rerate_subscription
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

pytestmark = pytest.mark.usefixtures("prefect_harness")
HOUR = datetime(2025, 3, 15, 10, tzinfo=UTC)


def _billing_report() -> str:
    """The newest ``billing-cycle`` artifact."""
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            artifact = await client.read_latest_artifacts()
            return next(a.data for a in artifact if a.key == "billing-cycle")

    return asyncio.run(read())


def _snapshot_hours(engine: Engine) -> list[datetime]:
    with engine.connect() as conn:
        return list(conn.execute(text("select as_of from usage_snapshots order by as_of"))
                    .scalars())


def test_rerun_and_backfill_of_past_hours_store_and_report_the_hour(
    engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_000)])
    for n in range(3):
        billing_cycle(hour=HOUR + timedelta(hours=n))
    assert _snapshot_hours(engine) == [HOUR]  # 11:00 and 12:00 changed nothing: no work

    rerun = billing_cycle(hour=HOUR)
    assert rerun["usage"]["snapshots"] == 0  # its own row is current: nothing priced again
    assert (rerun["usage"]["subscriptions_as_of"], rerun["usage"]["amount_cents_as_of"]) == (
        1, 200)
    report = _billing_report()
    assert "- subscriptions: 1\n" in report and "- usage amount: 200 cents\n" in report

    # New events, then a backfill over the hours: each hour reports itself; the hours that
    # were snapshotted before (or lie before a later snapshot) store their own row.
    ingest_events(engine, tmp_path, [token_event("b", "2025-03-10T01:00:00Z", 1_000_000)])
    done = billing_backfill(start=HOUR - timedelta(hours=1), hours=4)
    reports = [(r["usage"]["subscriptions_as_of"], r["usage"]["amount_cents_as_of"])
               for r in done["results"]]
    assert reports == [(1, 300)] * 4
    assert _snapshot_hours(engine) == [HOUR - timedelta(hours=1), HOUR]
    assert "- usage amount: 300 cents\n" in _billing_report()


def test_rerate_posts_the_wallet_difference_in_the_same_run(
    engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_000)])
    first = billing_cycle(hour=HOUR)
    assert Decimal(first["wallets"]["amount_cents_deducted"]) == 200

    def triple(plan: dict) -> None:  # mistral-small input: $1 -> $3 per 1M tokens
        for f in plan["charges"][0]["filters"]:
            if f["values"] == {"model": ["mistral-small"], "type": ["input"]}:
                f["properties"]["amount"] = "3"

    apply_mistral(engine, tmp_path, plan=triple)
    result = rerate_subscription(external_subscription_id=SUB, at=HOUR + timedelta(minutes=30))
    assert result["usage"]["amount_cents"] == 600
    assert Decimal(result["wallets"]["amount_cents_deducted"]) == 400  # the difference, now
    with engine.connect() as conn:
        deducted = conn.execute(text("select deducted_cents from wallet_usage_positions"))
        assert deducted.scalar_one() == 600


def test_the_billing_cycle_bills_charges_paid_in_advance_once(
    engine: Engine, tmp_path: Path
) -> None:
    """The real flow: the event's fee on a pay_in_advance invoice, paid from the wallet (no
    hourly deduction for it), reported in the artifact; a rerun of the hour bills nothing."""
    def in_advance(plan: dict) -> None:
        plan["charges"][0]["pay_in_advance"] = True

    apply_mistral(engine, tmp_path, plan=in_advance)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_000)])
    first = billing_cycle(hour=HOUR)
    assert (first["advance"]["fees"], first["advance"]["invoices"]) == (1, 1)
    assert first["advance"]["paid_cents"] == "200"
    assert Decimal(first["wallets"]["amount_cents_deducted"]) == 0
    assert "- 1 event fee(s), 200 cents, 1 pay_in_advance invoice(s)" in _billing_report()
    assert billing_cycle(hour=HOUR)["advance"]["fees"] == 0
    with engine.connect() as conn:
        assert conn.execute(text("select sum(amount_cents) from wallet_transactions"
                                 " where direction = 'outbound'")).scalar_one() == 200
