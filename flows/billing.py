"""The billing cycle and its on-demand variants: rerun an hour, backfill a window, re-rate.

Orchestration only. Every run takes its hour from its parameters or its scheduled start time,
never from "now" alone, so a rerun of 10:00 recomputes 10:00 (docs/architecture.md §3,
invariant 5); the flows it calls are idempotent per hour, so reruns, retries and overlapping
runs converge. That is also why the billing cycle may retry as a whole: a failed attempt that
posted half of its deductions is completed, not repeated, by the next attempt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact

from tallyflow.flows.contained import contained_section, report_contained
from tallyflow.flows.invoices import close_periods_flow
from tallyflow.flows.links import run_link
from tallyflow.flows.params import (
    HourCount,
    OptionalHour,
    OptionalMoment,
    StartHour,
    SubscriptionId,
    backfill_hours,
    hour_label,
    moment_label,
    resolve_as_of,
    run_param,
)
from tallyflow.flows.usage_snapshot import usage_snapshot
from tallyflow.flows.wallet_deductions import wallet_deductions
from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.settings import get_settings
from tallyflow.models.lago.money import cents_text
from tallyflow.models.lago.summaries import (
    AdvanceSummary,
    BackfillSummary,
    BillingCycleSummary,
    CloseSummary,
    ContainedFailure,
    ReclaimSummary,
    RerateSummary,
    UsageSnapshotSummary,
    WalletRunSummary,
)
from tallyflow.tasks.health import CurrentRun, billing_health_task
from tallyflow.tasks.ingest import reclaim_dead_claims_task
from tallyflow.tasks.invoicing import advance_charges_task
from tallyflow.tasks.runs import (
    HOOKS,
    LISTED,
    ContainedFailures,
    name_scheduled_runs_task,
    tracked,
    withheld_customers,
)
from tallyflow.tasks.usage import complete_change_set_task, customer_of_task
from tallyflow.tasks.wallets import customer_movements_task

# A billing hour is retried as a whole after transient trouble its tasks did not absorb (the
# database gone for minutes, say); after that the run fails and the automation notifies.
BILLING_RETRIES = 2
ARTIFACT_CUSTOMERS = 50

P = ParamSpec("P")
R = TypeVar("R")


class _RetryDelayFromSettings(Flow[P, R]):
    """A flow whose retry delay is ``TALLYFLOW_BILLING_RETRY_DELAY_SECONDS``, read when a run
    starts rather than when the module is imported (docs/architecture.md §12).

    Prefect reads ``retry_delay_seconds`` from the flow object when it creates a run (a call)
    or starts one (a deployed run on a worker or served), and keeps it in the run's policy;
    the server's retry rule uses that. So the delay is the setting of the process that starts
    the run, as it was when the module read it at import in that same process.
    """

    @property
    def retry_delay_seconds(self) -> float | int:
        return get_settings().billing_retry_delay_seconds

    @retry_delay_seconds.setter
    def retry_delay_seconds(self, value: float | int) -> None:
        """``Flow.__init__`` stores the decorator's value (none): the setting wins."""


def _retry_delay_from_settings(built: Flow[P, R]) -> Flow[P, R]:
    """Make a flow built by ``@flow(...)`` read its retry delay from the settings. The
    decorator stays ``@flow`` so that Prefect, which can read a flow's name from its
    ``@flow(...)`` call without importing the module, still finds it."""
    built.__dict__.pop("retry_delay_seconds", None)
    built.__class__ = _RetryDelayFromSettings
    return built


def scheduled_hour() -> datetime:
    """The hour this run is for: its scheduled start (manual runs are scheduled when created)."""
    return resolve_as_of(None).replace(minute=0, second=0, microsecond=0)


def _billing_name() -> str:
    hour = moment_label(run_param("hour", default=None))
    return f"billing {hour or hour_label(scheduled_hour())}"


def billing_name_of(scheduled: datetime, parameters: dict[str, Any]) -> str:
    """The name a run of this flow gets when it starts, from its scheduled time and
    parameters: given to scheduled runs ahead of time (tasks/runs/names.py)."""
    hour = moment_label(parameters.get("hour"))
    return f"billing {hour or hour_label(scheduled.replace(minute=0, second=0, microsecond=0))}"


@_retry_delay_from_settings
@flow(
    name="billing-cycle",
    flow_run_name=_billing_name,
    retries=BILLING_RETRIES,
    log_prints=True,
    **HOOKS,
)
@tracked
def billing_cycle(hour: OptionalHour = None) -> BillingCycleSummary:
    """Usage snapshot, wallet deductions, charges paid in advance, then period close
    (invoices), for one hour; first, objects a dead ingest run left pending are loaded, so
    no dead run holds finalization back (tasks/ingest/claims.py).

    Args:
        hour: The hour to bill, with its offset (e.g. 2026-11-27T10:00:00Z). Leave empty for
            the hour this run was scheduled for; rerunning an hour recomputes exactly that hour.
    """
    at = hour or scheduled_hour()
    if runtime.deployment.id:  # the deployment's queued runs, named by their hour
        name_scheduled_runs_task(str(runtime.deployment.id), billing_name_of)
    # objects a dead ingest run left pending hold the ingest watermark: load them first
    reclaimed = reclaim_dead_claims_task()
    # Each step contains a failure to its unit and reports it instead of failing (its other
    # units commit); the cycle goes on and fails at its end naming them (docs/data-quality.md,
    # "A failure stays with its customer").
    # only the subscriptions in the hour's change set (docs/architecture.md §24)
    usage_state = usage_snapshot(as_of=at, raise_contained=False, change_set=True,
                                 return_state=True)
    usage = usage_state.result()
    contained: list[ContainedFailure] = list(usage["contained"])
    failpoint("billing.between_flows")
    # a customer whose snapshot failed is not deducted from its previous (stale) snapshot
    wallets_state = wallet_deductions(as_of=at, skip_customers=withheld_customers(contained),
                                      raise_contained=False, change_set=at, return_state=True)
    wallets = wallets_state.result()
    contained += wallets["contained"]
    # charges paid in advance: each new event's fee, invoice and wallet payment, once (after
    # the wallet flow opened and topped up this hour's wallets)
    advance = advance_charges_task(at)
    contained += advance["contained"]
    movements = customer_movements_task(wallets["run_id"]) if "run_id" in wallets else []
    failpoint("billing.before_close")
    # nor closed on numbers an earlier step could not bring up to date
    invoices_state = close_periods_flow(at=at, skip_customers=withheld_customers(contained),
                                        raise_contained=False, return_state=True)
    invoices = invoices_state.result()
    contained += invoices["contained"]
    summary: BillingCycleSummary = {
        "hour": at.isoformat(), "usage": usage, "advance": advance, "wallets": wallets,
        "invoices": invoices, "reclaimed": reclaimed, "contained": contained[:LISTED],
        "contained_units": sum(not f["withheld"] for f in contained),
    }
    create_markdown_artifact(
        _artifact(at, usage, wallets, movements,
                  usage_run=usage_state.state_details.flow_run_id,
                  wallet_run=wallets_state.state_details.flow_run_id)
        + _advance_section(advance)
        + _invoices_section(invoices, invoices_state.state_details.flow_run_id)
        + _reclaim_section(reclaimed)
        + contained_section(contained),
        key="billing-cycle",
        description=f"Billing {hour_label(at)}",
    )
    _report_health(at, contained)
    if contained:
        report_contained(contained)
        raise ContainedFailures(contained, summary)
    # every step committed: the next hour's change set starts from this one (a failed or
    # crashed hour leaves the base where it was, so the next set covers its changes too)
    failpoint("billing.before_complete_change_set")
    complete_change_set_task(at)
    return summary


HEALTH_KEY = "billing-health"


def _report_health(at: datetime, contained: list[ContainedFailure]) -> None:
    """Keep the ``billing-health`` artifact up to date and log the figures at INFO. Health is
    an observation of the present (watermark lag, drafts due), so it reads the clock, unlike
    the billing above, which bills ``at``."""
    current = CurrentRun(flow_run_id=str(runtime.flow_run.id), name=runtime.flow_run.name,
                         hour=at, contained=contained[:LISTED])
    health = billing_health_task(datetime.now(UTC), current)
    get_run_logger().info(health.log_line())
    create_markdown_artifact(health.markdown(), key=HEALTH_KEY,
                             description=f"Billing health after {hour_label(at)}")


def _artifact(
    hour: datetime, usage: UsageSnapshotSummary, wallets: WalletRunSummary,
    movements: list[dict[str, Any]], usage_run: Any, wallet_run: Any,
) -> str:
    deducted = sum((m["deducted_cents"] for m in movements), Decimal(0))
    credited = sum((m["credited_back_cents"] for m in movements), Decimal(0))
    lines = [
        f"# Billing {hour_label(hour)}",
        "",
        f"Usage as of {hour_label(hour)}: the billing period containing that hour, with every"
        f" event ingested when this run ran.",
        "",
        f"- subscriptions: {usage.get('subscriptions_as_of', 0)}",
        _change_set_line(usage),
        f"- usage amount: {usage.get('amount_cents_as_of', 0)} cents",
        f"- usage snapshot: {run_link(usage_run, 'usage-snapshot run')}: stored"
        f" {usage.get('snapshots', 0)} snapshot(s) ({usage.get('amount_cents', 0)} cents);"
        f" the other subscriptions had not changed",
        f"- wallet deductions: {run_link(wallet_run, 'wallet-deductions run')}:"
        f" {len(movements)} customer(s) moved, {cents_text(deducted)} cents deducted,"
        f" {cents_text(credited)} cents credited back",
        f"- top-ups {wallets.get('top_ups', 0)}, alerts {wallets.get('alerts', 0)},"
        f" wallets below zero {wallets.get('negative_wallets', 0)}",
    ]
    if movements:
        lines += ["", "## Per customer (this run's ledger postings)", "",
                  "| customer | deducted (cents) | credited back (cents) | transactions |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {m['customer']} | {cents_text(m['deducted_cents'])} |"
            f" {cents_text(m['credited_back_cents'])} | {m['transactions']} |"
            for m in movements[:ARTIFACT_CUSTOMERS]
        ]
        if len(movements) > ARTIFACT_CUSTOMERS:
            lines.append(f"\n... and {len(movements) - ARTIFACT_CUSTOMERS} more customers"
                         " (`tallyflow wallets show CUSTOMER`).")
    else:
        lines += ["", "No wallet postings in this run: every ledger already matched usage."]
    return "\n".join(lines)


def _change_set_line(usage: UsageSnapshotSummary) -> str:
    """What the hour looked at (docs/architecture.md §24)."""
    changes = usage.get("change_set")
    if not changes or changes["full"]:
        return ("- change set: every subscription (no completed hour before this one, or an"
                " hour behind a later one)")
    why = ", ".join(f"{k} {v}" for k, v in sorted(changes["reasons"].items())) or "nothing"
    return (f"- change set: {changes['subscriptions']} subscription(s) changed since"
            f" {changes['base_as_of']} ({why})")


def _advance_section(advance: AdvanceSummary) -> str:
    return (f"\n\n## Charges paid in advance\n\n- {advance.get('fees', 0)} event fee(s),"
            f" {advance.get('amount_cents', 0)} cents, {advance.get('invoices', 0)}"
            f" pay_in_advance invoice(s), {advance.get('paid_cents', 0)} cents paid from wallets"
            f" (`tallyflow invoices advance-fees`)")


def _invoices_section(invoices: CloseSummary, run: Any) -> str:
    finalized = invoices.get("finalized_invoices", [])
    lines = [
        "", "## Invoices", "",
        f"- period close: {run_link(run, 'close-periods run')}: {len(finalized)} finalized,"
        f" {invoices.get('drafts', 0)} draft(s) refreshed,"
        f" ingest watermark {invoices.get('watermark') or 'none yet'}",
        f"- late usage (events for finalized invoices, not billed):"
        f" {invoices.get('late_events', 0)} (`tallyflow invoices late-usage`)",
        f"- PDFs pending for the `invoice-pdfs` flow (every 10 minutes; `tallyflow invoices"
        f" pdfs` now): {invoices.get('pdfs_pending', 0)}",
    ]
    if finalized:
        lines += ["", "| invoice | customer | issuing date | total | prepaid credits |",
                  "| --- | --- | --- | ---: | ---: |"]
        lines += [
            f"| {i['number']} | {i['customer']} | {i['issuing_date']} |"
            f" {i['total_amount_cents']} {i['currency']} |"
            f" {i['prepaid_credit_amount_cents']} |"
            for i in finalized[:ARTIFACT_CUSTOMERS]
        ]
        if len(finalized) > ARTIFACT_CUSTOMERS:
            lines.append(f"\n... and {len(finalized) - ARTIFACT_CUSTOMERS} more"
                         " (`tallyflow invoices list --status finalized`).")
    return "\n".join(lines)


def _reclaim_section(reclaimed: ReclaimSummary) -> str:
    if not reclaimed.get("reclaimed"):
        return ""
    lines = ["", "## Objects reclaimed from dead ingest runs", "",
             f"{reclaimed['reclaimed']} object(s) left pending by a run that died were loaded"
             f" ({reclaimed.get('accepted', 0)} events accepted,"
             f" {reclaimed.get('failed_objects', 0)} failed: `tallyflow runs --objects`)."]
    held = reclaimed.get("held_by")
    if held:
        lines.append(f"\nThe ingest watermark was held at {held['since']} by {held['object']}"
                     f" (ingest run {held['ingest_run']}, {held['run_status']}).")
    return "\n".join(lines)


def _backfill_name() -> str:
    start = moment_label(run_param("start", default=None)) or "?"
    return f"backfill {start} +{run_param('hours', default='?')}h"


@flow(name="billing-backfill", flow_run_name=_backfill_name, log_prints=True, **HOOKS)
@tracked
def billing_backfill(start: StartHour, hours: HourCount = 24) -> BackfillSummary:
    """Run the billing cycle hour by hour over a window, oldest first.

    Args:
        start: The first hour to bill, with its offset (e.g. 2026-11-27T00:00:00Z).
        hours: How many hours from the first one on (24 = one day, at most 92 days). A window
            is a start and a length, so it can never be reversed.

    Prefect does no catch-up of missed schedules; this is how a gap is filled. Hours run in
    order because each hour's deductions build on the ledger the previous hours left.
    """
    window = backfill_hours(start, hours)
    results = [billing_cycle(hour=h) for h in window]
    return {"hours": len(window), "first": window[0].isoformat(),
            "last": window[-1].isoformat(), "results": results}


def _rerate_name() -> str:
    return f"re-rate {run_param('external_subscription_id')}"


@flow(name="rerate-subscription", flow_run_name=_rerate_name, log_prints=True, **HOOKS)
@tracked
def rerate_subscription(
    external_subscription_id: SubscriptionId, at: OptionalMoment = None
) -> RerateSummary:
    """Recompute one subscription's current usage (e.g. after a price change) and post the
    difference to its customer's wallets in the same run, not at the next billing cycle.

    Args:
        external_subscription_id: The subscription's external_id.
        at: The moment to price as of, with its offset. Leave empty for the time this run was
            scheduled.
    """
    moment = resolve_as_of(at)
    usage = usage_snapshot(as_of=moment, subscriptions=[external_subscription_id])
    customer = customer_of_task(external_subscription_id)
    wallets: WalletRunSummary | dict[str, Any] = (
        wallet_deductions(as_of=moment, customers=[customer]) if customer else {})
    return {"usage": usage, "wallets": wallets}
