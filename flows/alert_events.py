"""The operator's side of a wallet alert: its Prefect event, for the automations
(``deployments/automations.yaml``, ``tallyflow-wallet-alert``).

Emitted from the ``wallet_alerts`` rows after they committed, by both flows that evaluate
the alerts (``refresh-balances`` every minute, ``wallet-deductions`` hourly): one evaluation
writes the row and, in the same transaction, the ``wallet.depleted_ongoing_balance`` webhook;
this announces the same row to Prefect (docs/architecture.md §21). An automation never hears
of an alert that was rolled back, and a crash before ``mark_alerts_emitted`` re-emits it at
the next run.
"""

from __future__ import annotations

from prefect.events import emit_event

from tallyflow.infra.failpoints import failpoint
from tallyflow.tasks.wallets import (
    MAX_ALERT_EVENTS,
    alert_event,
    alerts_summary_event,
    mark_alerts_emitted_task,
    pending_alert_events_task,
)


def emit_wallet_alerts(run_id: int | None) -> int:
    """Emit a Prefect event per alert not emitted yet; returns how many were pending.

    At most ``MAX_ALERT_EVENTS`` single events per run; beyond that one summary event
    carries the counts, because thousands of events at once notify nobody usefully and
    would flood the event bus. Every alert row stays queryable either way.
    """
    pending = pending_alert_events_task(MAX_ALERT_EVENTS)
    for alert in pending.alerts:
        emit_event(**alert_event(alert))
    if pending.total > len(pending.alerts):
        emit_event(**alerts_summary_event(pending, run_id))
    failpoint("wallets.before_mark_emitted")
    if pending.total:
        mark_alerts_emitted_task(pending.up_to_id)
    return pending.total
