"""Flow ``deliver-webhooks`` (every minute): bill the usage thresholds crossed (progressive
invoices, §20), evaluate the usage alerts, then send the webhooks the outbox holds
(``invoice.created`` and ``alert.triggered`` included, so a crossing is announced in the same
run).

Orchestration only (``tasks/webhooks/`` claims, signs, posts and logs). The webhooks were
written in the transactions of the changes they announce (``enqueue``), so this flow is the
only place where a receiver is called, and a slow or dead receiver costs this flow time,
never billing (docs/architecture.md §17). Safe beside itself (rows are claimed with SKIP
LOCKED) and to kill (a claimed row is due again when its lease ends).
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from tallyflow.flows.params import moment_label, resolve_as_of
from tallyflow.models.lago.summaries import WebhookRunSummary
from tallyflow.tasks.alerts import evaluate_task
from tallyflow.tasks.invoicing import bill_thresholds_task, report_thresholds
from tallyflow.tasks.runs import HOOKS, tracked
from tallyflow.tasks.webhooks import deliver_task

DEFAULT_LIMIT = 1000

WebhookCount = Annotated[int, Field(
    ge=1, le=100_000, description="Send at most this many webhooks in this run; the rest wait "
    "for the next one.", json_schema_extra={"title": "At most webhooks"})]


def _webhooks_name() -> str:
    return f"webhooks {moment_label(resolve_as_of(None))}"


def _evaluate_alerts() -> None:
    """Usage alerts (docs/architecture.md §18), contained: an alert failure is printed and
    never keeps the webhooks already written from going out."""
    try:
        alerts = evaluate_task()
    except Exception as exc:  # contained: delivery goes on
        print(f"alerts: evaluation failed ({type(exc).__name__}: {exc}); retried next minute")
        return
    print(f"alerts: {alerts['subscriptions']} subscription(s) evaluated,"
          f" {alerts['triggered']} alert(s) triggered, {len(alerts['failed'])} failed")
    for failed in alerts["failed"]:
        print(f"alerts: {failed['subscription']}: {failed['error']}")


def _bill_thresholds() -> None:
    """Progressive billing (docs/architecture.md §20), contained like the alerts."""
    try:
        report_thresholds(bill_thresholds_task())
    except Exception as exc:  # contained: alerts and delivery go on
        print(f"usage thresholds: evaluation failed ({type(exc).__name__}: {exc});"
              " retried next minute")


@flow(name="deliver-webhooks", flow_run_name=_webhooks_name, log_prints=True, **HOOKS)
@tracked
def deliver_webhooks(limit: WebhookCount = DEFAULT_LIMIT) -> WebhookRunSummary:
    """Send every due webhook once (pending ones, and failed ones whose backoff has passed),
    up to ``limit``; log each attempt.

    Args:
        limit: Send at most this many webhooks in this run.
    """
    _bill_thresholds()
    _evaluate_alerts()
    summary = deliver_task(limit)
    print(f"webhooks: {summary['succeeded']} delivered, {summary['retrying']} to retry,"
          f" {summary['failed']} failed for good")
    return summary
