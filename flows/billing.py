"""The billing cycle and its on-demand variants: rerun an hour, backfill a window, re-rate.

Orchestration only. Every run takes its hour from its parameters or its scheduled start time,
never from "now" alone, so a rerun of 10:00 recomputes 10:00 (design invariant 5); the flows
it calls are idempotent per hour, so reruns and overlapping runs converge.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.params import (
    BackfillWindow,
    BillingHour,
    Rerate,
    hour_label,
    resolve_as_of,
    run_param,
)
from flows.usage_snapshot import usage_snapshot
from flows.wallet_deductions import wallet_deductions
from tallyflow.failpoints import failpoint


def scheduled_hour() -> datetime:
    """The hour this run is for: its scheduled start (manual runs are scheduled when created)."""
    return resolve_as_of(None).replace(minute=0, second=0, microsecond=0)


def _billing_name() -> str:
    hour = run_param("target", "hour", None)
    if isinstance(hour, str):
        hour = datetime.fromisoformat(hour.replace("Z", "+00:00"))
    return f"billing {hour_label(hour or scheduled_hour())}"


@flow(name="billing-cycle", flow_run_name=_billing_name, log_prints=True)
def billing_cycle(target: BillingHour | None = None) -> dict:
    """Usage snapshot, then wallet deductions, for one hour."""
    hour = target.hour if target else scheduled_hour()
    usage = usage_snapshot(as_of=hour)
    failpoint("billing.between_flows")
    wallets = wallet_deductions(as_of=hour)
    summary = {"hour": hour.isoformat(), "usage": usage, "wallets": wallets}
    create_markdown_artifact(
        f"### Billing {hour_label(hour)}\n\n"
        f"- subscriptions snapshotted: {usage.get('snapshots', 0)}\n"
        f"- usage amount: {usage.get('amount_cents', 0)} cents\n"
        f"- wallet deductions: {_describe(wallets)}\n",
        key="billing-cycle",
    )
    return summary


def _describe(wallets: dict) -> str:
    keys = ("customers", "wallets_touched", "credits_deducted", "corrections", "alerts")
    return ", ".join(f"{k} {wallets[k]}" for k in keys if k in wallets) or str(wallets)


def _backfill_name() -> str:
    return f"backfill {run_param('window', 'start')} .. {run_param('window', 'end')}"


@flow(name="billing-backfill", flow_run_name=_backfill_name, log_prints=True)
def billing_backfill(window: BackfillWindow) -> dict:
    """Run the billing cycle hour by hour over a window, oldest first.

    Prefect does no catch-up of missed schedules; this is how a gap is filled. Hours run in
    order because each hour's deductions build on the ledger the previous hours left.
    """
    hours = window.hours()
    results = [billing_cycle(BillingHour(hour=hour)) for hour in hours]
    return {"hours": len(hours), "first": hours[0].isoformat(), "last": hours[-1].isoformat(),
            "results": results}


def _rerate_name() -> str:
    return f"re-rate {run_param('request', 'external_subscription_id')}"


@flow(name="rerate-subscription", flow_run_name=_rerate_name, log_prints=True)
def rerate_subscription(request: Rerate) -> dict:
    """Recompute one subscription's current usage now (e.g. after a price change)."""
    return usage_snapshot(as_of=request.at, subscriptions=[request.external_subscription_id])
