"""Flow ``wallet-deductions`` (hourly, after ``usage-snapshot``): the prepaid-wallet ledger.

Orchestration only; every write is a task in ``tasks.wallets`` that is idempotent by key and
retried on transient failures, so a rerun, a retry or a concurrent run converges to the same
ledger (docs/architecture.md §3, invariant 4). Order matters and is fixed here:

1. open new catalog wallets (their initial top-up, once);
2. expire wallets past ``expiration_at`` (what is left is voided);
3. interval top-ups due in the current interval;
4. usage deductions: customers whose usage differs from what is deducted, in batches;
5. threshold top-ups and alerts on the balances that result (the same evaluation the
   ``refresh-balances`` flow runs every minute, on the ongoing balances: §21);
6. Prefect events for new alerts (``flows/alert_events.py``), the run history row and a
   markdown artifact.

The time is the ``as_of`` parameter or the run's scheduled start, never "now" alone, so a
rerun of 10:00 recomputes 10:00. ``refresh_usage`` runs ``usage-snapshot`` for the same
``as_of`` first, so one scheduled deployment keeps the two in order.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tallyflow.flows.alert_events import emit_wallet_alerts
from tallyflow.flows.contained import contained_section, report_contained
from tallyflow.flows.params import moment_label, resolve_as_of, run_param
from tallyflow.infra.failpoints import failpoint
from tallyflow.models.lago.summaries import DeductionTotals, WalletRunSummary
from tallyflow.tasks.runs import HOOKS, ContainedFailures, failure_message, tracked, withheld_task
from tallyflow.tasks.wallets import (
    DEDUCTIONS_STEP,
    DEFAULT_BATCH,
    DEFAULT_GRACE_HOURS,
    DeductionBatch,
    batch_dict,
    chunks,
    deduct_task,
    due_customers_task,
    evaluate_alerts_task,
    expire_wallets_task,
    finish_run_task,
    interval_top_ups_task,
    open_wallets_task,
    settle_paid_default,
    start_run_task,
    threshold_top_ups_task,
)

STALE_REASON = ("not deducted: the usage snapshot of one of its subscriptions failed this hour,"
                " so its usage would be a stale snapshot's")


def _run_name() -> str:
    return f"wallet deductions {moment_label(run_param('as_of', default=None)) or 'scheduled'}"


@flow(
    name="wallet-deductions",
    flow_run_name=_run_name,
    # Batches lock disjoint customers (each in wallet-id order), so two at a time overlap one
    # batch's SQL with the next one's allocation without waiting on each other.
    # Prefect types TaskRunner's future parameter invariantly; a thread pool runner is one.
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
    log_prints=True,
    **HOOKS,
)
@tracked
def wallet_deductions(
    as_of: datetime | None = None,
    customers: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    settle_paid: bool | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
    refresh_usage: bool = False,
    skip_customers: list[str] | None = None,
    raise_contained: bool = True,
    change_set: datetime | None = None,
) -> WalletRunSummary:
    """Bring every wallet's ledger up to what usage says is owed as of ``as_of``.

    ``skip_customers`` (external ids): no usage deduction for them in this run, because
    their usage snapshot failed this hour (never deduct from a stale snapshot); they are
    listed as withheld. A customer whose deduction fails alone is contained (the others
    commit); the run then ends Failed naming it after every step ran, unless
    ``raise_contained`` is off (the billing cycle, which fails at its own end).

    ``change_set`` (the hour whose set the usage snapshot took): the usage deductions look
    only at its members' customers (docs/architecture.md §24).
    """
    moment = resolve_as_of(as_of)
    settle = settle_paid_default() if settle_paid is None else settle_paid
    if refresh_usage:
        from tallyflow.flows.usage_snapshot import usage_snapshot

        usage_snapshot(as_of=moment)
    flow_run_id = str(runtime.flow_run.id or "") or None
    run_id = start_run_task(moment, flow_run_id)
    # what a failed run records: the steps it reached
    reached: dict[str, Any] = {"run_id": run_id, "as_of": moment.isoformat()}
    try:
        reached["opened"] = opened = open_wallets_task(moment, settle, run_id)
        failpoint("wallets.after_open")
        reached["expired"] = expired = len(expire_wallets_task(moment, run_id))
        interval = interval_top_ups_task(moment, settle, run_id)
        due = due_customers_task(moment, customers, grace_hours, skip_customers, change_set)
        held = withheld_task(DEDUCTIONS_STEP, skip_customers or [], STALE_REASON)
        futures = [
            deduct_task.submit(ids, moment, run_id, ids[0], grace_hours)
            for ids in chunks(due, max(1, batch_size))
        ]
        batches: list[DeductionBatch] = [future.result() for future in futures]
        threshold = threshold_top_ups_task(moment, settle, run_id)
        failpoint("wallets.after_topups")
        alerts = evaluate_alerts_task(moment, run_id)
        failpoint("wallets.after_alerts")
        emitted = emit_wallet_alerts(run_id)
        summary: WalletRunSummary = {
            "run_id": run_id, "as_of": moment.isoformat(), "opened": opened, "expired": expired,
            **_totals(batches),
            "due_customers": len(due), "top_ups": interval + threshold,
            "interval_top_ups": interval, "threshold_top_ups": threshold,
            "alerts": alerts.opened, "alerts_resolved": alerts.resolved,
            "events_emitted": emitted,
            "contained": [*held, *(f for b in batches for f in b.failed)],
        }
    except Exception as exc:
        finish_run_task(run_id, reached, "failed", f"{type(exc).__name__}: {exc}")
        raise
    failpoint("wallets.before_finish_run")
    contained = summary["contained"]
    if contained and raise_contained:
        finish_run_task(run_id, summary, "failed", failure_message(contained))
    else:
        finish_run_task(run_id, summary)
    _report(summary)
    if contained and raise_contained:
        report_contained(contained)
        raise ContainedFailures(contained, summary)
    return summary


def _totals(batches: list[DeductionBatch]) -> DeductionTotals:
    wallets = {w for b in batches for w in b.wallets}
    negative = [n for b in batches for n in batch_dict(b)["negative"]]
    top = sorted(
        (row for b in batches for row in b.top),
        key=lambda r: (-Decimal(str(r["amount_cents"])), r["customer"]),
    )[:10]
    return {
        "customers": sum(b.customers for b in batches),
        "wallets_touched": len(wallets),
        "transactions": sum(b.transactions for b in batches),
        "credits_deducted": format(sum((b.credits_deducted for b in batches), Decimal(0)), "f"),
        "amount_cents_deducted": format(
            sum((b.amount_cents_deducted for b in batches), Decimal(0)), "f"
        ),
        "corrections": sum(b.corrections for b in batches),
        "credits_corrected": format(sum((b.credits_corrected for b in batches), Decimal(0)), "f"),
        "amount_cents_corrected": format(
            sum((b.amount_cents_corrected for b in batches), Decimal(0)), "f"
        ),
        "uncovered_cents": format(sum((b.uncovered_cents for b in batches), Decimal(0)), "f"),
        "negative_wallets": len(negative),
        "negative": negative[:50],
        "top": top,
    }


def _report(summary: WalletRunSummary) -> None:
    lines = [
        f"# Wallet deductions as of {summary['as_of']}",
        "",
        "| what | value |",
        "| --- | ---: |",
    ]
    for key in (
        "due_customers", "customers", "wallets_touched", "transactions", "credits_deducted",
        "amount_cents_deducted", "corrections", "credits_corrected", "uncovered_cents",
        "opened", "expired", "interval_top_ups", "threshold_top_ups", "alerts",
        "alerts_resolved", "negative_wallets",
    ):
        lines.append(f"| {key.replace('_', ' ')} | {summary.get(key, 0)} |")
    if summary.get("negative"):
        lines += ["", "## Wallets below zero (overflow)", "",
                  "| customer | wallet | credits balance | overflow (cents) |",
                  "| --- | --- | ---: | ---: |"]
        lines += [
            f"| {n['external_customer_id']} | {n['wallet_code']} | {n['credits_balance']} |"
            f" {n['overflow_cents']} |"
            for n in summary["negative"]
        ]
    if summary.get("top"):
        lines += ["", "## Largest deductions", "",
                  "| customer | subscription | deducted (cents) | usage (cents) |",
                  "| --- | --- | ---: | ---: |"]
        lines += [
            f"| {t['customer']} | {t['subscription']} | {t['amount_cents']} |"
            f" {t['usage_cents']} |"
            for t in summary["top"]
        ]
    create_markdown_artifact(
        "\n".join(lines) + contained_section(summary.get("contained", [])),
        key="wallet-deductions",
        description=f"Wallet run {summary['run_id']} as of {summary['as_of']}",
    )
