"""Flow ``refresh-balances`` (every minute, deployment ``balances``): keep the running
balances and evaluate the wallet alerts on them (docs/architecture.md §19, §21).

Orchestration only. One pass of the balance refresh (``running_usage``: the subscriptions
with events, or a void, since the last pass are rated; their figure is what the balance
endpoint, the wallet endpoints and ``tallyflow wallets show`` read), then the wallet alerts
on the ongoing balances that result: one evaluation writes each new crossing, its
``wallet.depleted_ongoing_balance`` webhook in the same transaction (the ``webhooks``
deployment delivers it) and, once committed, the operator's Prefect event
(``flows/alert_events.py``). A pass rates at the wall clock, not the scheduled start: its
figure counts the events committed so far whenever the run starts. Idempotent, so a rerun,
a retry or two runs at once write the same figures; a crash leaves the previous ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tallyflow.flows.alert_events import emit_wallet_alerts
from tallyflow.flows.params import moment_label
from tallyflow.models.lago.summaries import BalanceRunSummary
from tallyflow.tasks.runs import HOOKS, tracked
from tallyflow.tasks.wallets import evaluate_alerts_task, refresh_running_usage_task


def _balances_name() -> str:
    return f"balances {moment_label(datetime.now(UTC))}"


@flow(name="refresh-balances", flow_run_name=_balances_name, log_prints=True, **HOOKS)
@tracked
def refresh_balances() -> BalanceRunSummary:
    """Rate the subscriptions with new events into the running balances, then open (and
    announce) or resolve the wallet alerts on the ongoing balances."""
    moment = datetime.now(UTC)
    refreshed = refresh_running_usage_task(moment)
    alerts = evaluate_alerts_task(moment, None)
    emitted = emit_wallet_alerts(None)
    print(
        f"balances: {refreshed.rated} subscription(s) rated, watermark {refreshed.watermark};"
        f" wallet alerts: {alerts.opened} opened, {alerts.resolved} resolved,"
        f" {emitted} announced"
    )
    return {
        "refreshed_at": moment.isoformat(),
        "rated": refreshed.rated,
        "watermark": refreshed.watermark,
        "alerts": alerts.opened,
        "alerts_resolved": alerts.resolved,
        "events_emitted": emitted,
    }
