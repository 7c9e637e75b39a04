"""The Prefect task of the ``deliver-webhooks`` flow (``flows/webhooks.py``)."""

from __future__ import annotations

from prefect import task

from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.summaries import WebhookRunSummary
from tallyflow.tasks.runs import transient_retries
from tallyflow.tasks.webhooks.delivery import deliver_pending


@task(name="deliver-webhooks", **transient_retries(retries=2, backoff_factor=1))
def deliver_task(limit: int) -> WebhookRunSummary:
    """Send the due webhooks once each (a retry claims again: a webhook sent and not recorded
    goes again with its unique key, which receivers count once)."""
    return deliver_pending(billing_engine(), limit=limit).as_dict()
