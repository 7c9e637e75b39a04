"""The ``deliver-webhooks`` flow as Prefect runs it: it sends the due webhooks, returns its
summary in its shape, and is recorded in the run history as ``webhooks``."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.webhooks import deliver_webhooks
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import WebhookRunSummary
from tallyflow.tasks.webhooks import add_endpoint, enqueue, signing_key
from tests.tasks.webhooks.receiver import receiving

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_flow_delivers_and_is_recorded(engine: Engine) -> None:
    with receiving() as receiver:
        add_endpoint(engine, {"webhook_url": receiver.url})
        receiver.key = signing_key(engine).hmac_key
        with engine.begin() as conn:
            enqueue(conn, "invoice.created", "invoice", {"lago_id": "i1"})
        summary = deliver_webhooks(limit=10)
    assert mismatches(summary, WebhookRunSummary) == []
    assert (summary["claimed"], summary["succeeded"]) == (1, 1)
    assert len(receiver.events) == 1 and receiver.bad_signatures == 0
    with engine.connect() as conn:
        assert conn.execute(text("select status from run_history where kind = 'webhooks'")
                            ).scalars().all() == ["completed"]
