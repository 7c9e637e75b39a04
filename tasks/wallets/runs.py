"""Wallet runs (their history rows) and the Prefect task wrappers the wallet flow calls.

The wrappers add retries for transient failures only (``tallyflow.tasks.runs.retry``); the functions
they wrap are plain and tested without Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from prefect import task
from sqlalchemy import Engine, text

from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.runs import transient_retries
from tallyflow.tasks.wallets.alerts import (
    MAX_ALERT_EVENTS,
    AlertSummary,
    PendingAlerts,
    evaluate_alerts,
    mark_alerts_emitted,
    pending_alert_events,
)
from tallyflow.tasks.wallets.balance import RefreshSummary, refresh_running_usage
from tallyflow.tasks.wallets.deductions import DeductionBatch, deduct_contained, due_customers
from tallyflow.tasks.wallets.ledger import DEFAULT_GRACE_HOURS
from tallyflow.tasks.wallets.lifecycle import expire_wallets, open_wallets
from tallyflow.tasks.wallets.topups import interval_top_ups, threshold_top_ups


def start_run(engine: Engine, as_of: datetime, flow_run_id: str | None = None) -> int:
    """A ``wallet_runs`` row for this run (status running until ``finish_run``)."""
    with engine.begin() as conn:
        return int(conn.execute(
            text("insert into wallet_runs (as_of, flow_run_id) values (:a, :f) returning id"),
            {"a": as_of, "f": flow_run_id},
        ).scalar_one())


_RUN_COUNTS = (
    "customers", "wallets_touched", "transactions", "credits_deducted", "amount_cents_deducted",
    "corrections", "credits_corrected", "top_ups", "expired", "alerts", "negative_wallets",
    "uncovered_cents",
)


def finish_run(
    engine: Engine, run_id: int, summary: Mapping[str, Any], status: str = "completed",
    error: str | None = None,
) -> None:
    """Record the run's totals and outcome (the run history row)."""
    import json

    values = {key: summary.get(key, 0) for key in _RUN_COUNTS}
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                update wallet_runs set status = :status, error = :error, finished_at = now(),
                  customers = :customers, wallets_touched = :wallets_touched,
                  transactions = :transactions, credits_deducted = :credits_deducted,
                  amount_cents_deducted = :amount_cents_deducted, corrections = :corrections,
                  credits_corrected = :credits_corrected, top_ups = :top_ups,
                  expired = :expired, alerts = :alerts, negative_wallets = :negative_wallets,
                  uncovered_cents = :uncovered_cents, summary = cast(:summary as jsonb)
                where id = :id
                """
            ),
            {**values, "status": status, "error": error, "id": run_id,
             "summary": json.dumps(summary, default=str)},
        )


def recent_runs(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The last runs of the wallet flow (run history)."""
    with engine.connect() as conn:
        return [
            {k: (format(v, "f") if isinstance(v, Decimal) else v)
             for k, v in r._mapping.items()}
            for r in conn.execute(text(
                "select id, flow_run_id, as_of, status, customers, wallets_touched, transactions,"
                " credits_deducted, amount_cents_deducted, corrections, top_ups, expired,"
                " alerts, negative_wallets, uncovered_cents, started_at, finished_at, error"
                " from wallet_runs order by id desc limit :n"), {"n": limit})
        ]


_RETRIES = transient_retries(retries=4, backoff_factor=0.5)


@task(name="wallet-run-start", **_RETRIES)
def start_run_task(as_of: datetime, flow_run_id: str | None) -> int:
    return start_run(billing_engine(), as_of, flow_run_id)


@task(name="wallet-run-finish", **_RETRIES)
def finish_run_task(
    run_id: int, summary: Mapping[str, Any], status: str = "completed", error: str | None = None
) -> None:
    finish_run(billing_engine(), run_id, summary, status, error)


@task(name="open-wallets", **_RETRIES)
def open_wallets_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return open_wallets(billing_engine(), as_of, settle_paid, run_id)


@task(name="expire-wallets", **_RETRIES)
def expire_wallets_task(as_of: datetime, run_id: int) -> list[int]:
    return expire_wallets(billing_engine(), as_of, run_id)


@task(name="interval-top-ups", **_RETRIES)
def interval_top_ups_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return interval_top_ups(billing_engine(), as_of, settle_paid, run_id)


@task(name="due-customers", **_RETRIES)
def due_customers_task(
    as_of: datetime, only: list[str] | None, grace_hours: int = DEFAULT_GRACE_HOURS,
    skip: list[str] | None = None, change_set: datetime | None = None,
) -> list[int]:
    return due_customers(billing_engine(), as_of, only, grace_hours, skip, change_set)


@task(name="deduct-usage", task_run_name="deduct-usage-{first_id}", **_RETRIES)
def deduct_task(
    customer_ids: list[int], as_of: datetime, run_id: int, first_id: int,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> DeductionBatch:
    """One batch of customers in one transaction (``first_id`` only names the task run); a
    customer that fails alone is contained and reported, the others commit."""
    return deduct_contained(billing_engine(), customer_ids, as_of, run_id, grace_hours)


@task(name="threshold-top-ups", **_RETRIES)
def threshold_top_ups_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return threshold_top_ups(billing_engine(), as_of, settle_paid, run_id)


@task(name="evaluate-alerts", **_RETRIES)
def evaluate_alerts_task(as_of: datetime, run_id: int | None) -> AlertSummary:
    return evaluate_alerts(billing_engine(), as_of, run_id)


@task(name="refresh-running-usage", **_RETRIES)
def refresh_running_usage_task(now: datetime) -> RefreshSummary:
    """One balance refresh pass (``refresh_running_usage``); idempotent, so a retry is safe."""
    return refresh_running_usage(billing_engine(), now)


@task(name="pending-alert-events", **_RETRIES)
def pending_alert_events_task(limit: int = MAX_ALERT_EVENTS) -> PendingAlerts:
    return pending_alert_events(billing_engine(), limit)


@task(name="mark-alerts-emitted", **_RETRIES)
def mark_alerts_emitted_task(up_to_id: int) -> None:
    mark_alerts_emitted(billing_engine(), up_to_id)
