"""The Prefect task that evaluates usage alerts, run by the ``deliver-webhooks`` flow every
minute before it delivers (``flows/webhooks.py``; docs/architecture.md §18)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.results import AlertRunSummary
from tallyflow.tasks.alerts.evaluate import evaluate_alerts
from tallyflow.tasks.runs import transient_retries


@task(name="evaluate-alerts", **transient_retries(retries=2, backoff_factor=1))
def evaluate_task(at: datetime | None = None) -> AlertRunSummary:
    """Evaluate every live alert at ``at`` (now): each subscription contained, so one that
    fails is reported and the others trigger. A rerun triggers nothing new."""
    run = evaluate_alerts(billing_engine(), at or datetime.now(UTC))
    return {"subscriptions": run.subscriptions, "triggered": len(run.triggered),
            "failed": [{"subscription": s, "error": e} for s, e in run.failed]}
