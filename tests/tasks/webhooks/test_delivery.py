"""The outbox and its delivery against a real local HTTP receiver that verifies signatures
itself (tests/tasks/webhooks/receiver.py).

Lago's rules, per test: the envelope and headers (lago-api spec/models/webhook_spec.rb,
spec/services/webhooks/base_service_spec.rb), retries then ``failed``
(spec/services/webhooks/send_http_service_spec.rb), redelivery refused once succeeded
(spec/services/webhooks/retry_service_spec.rb). No real sleeps: the deliverer's clock is
injected, so "after the backoff" is a moment the test names.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import WebhookAttempt, WebhookDelivery
from tallyflow.tasks.webhooks import (
    WebhookError,
    add_endpoint,
    deliver_pending,
    enqueue,
    list_webhooks,
    requeue,
    signing_key,
    webhook_attempts,
)
from tests.tasks.webhooks.receiver import receiving

T0 = datetime(2100, 1, 1, 12, tzinfo=UTC)  # after every row written now
INVOICE = {"lago_id": "inv-1", "number": "TF-1", "total_amount_cents": 1234}


class Clock:
    """The deliverer's time, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _endpoint(engine: Engine, url: str, **more: Any) -> str:
    return str(add_endpoint(engine, {"webhook_url": url, **more})["lago_id"])


def _enqueue(engine: Engine, webhook_type: str = "invoice.created",
             payload: dict[str, Any] | None = None, key: str | None = None) -> int:
    with engine.begin() as conn:
        return enqueue(conn, webhook_type, "invoice", payload or INVOICE, key=key)


def test_without_endpoints_enqueue_writes_nothing(engine: Engine) -> None:
    # base_service_spec.rb "without webhook endpoint": no webhook model
    assert _enqueue(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from webhooks")).scalar_one() == 0
        assert conn.execute(text("select count(*) from webhook_signing")).scalar_one() == 0


def test_signed_as_lago_and_counted_once_after_two_failures(engine: Engine) -> None:
    # send_http_service_spec.rb: an error marks it retrying; webhook_spec.rb: hmac headers
    with receiving(fail_first=2) as receiver:
        _endpoint(engine, receiver.url)
        receiver.key = signing_key(engine).hmac_key
        assert _enqueue(engine, key="invoice.created:inv-1") == 1
        assert _enqueue(engine, key="invoice.created:inv-1") == 0  # a rerun adds nothing
        clock = Clock(T0)
        first = deliver_pending(engine, clock=clock, timeout=5)
        assert (first.claimed, first.retrying) == (1, 1)
        assert deliver_pending(engine, clock=clock, timeout=5).claimed == 0  # backoff: not due
        clock.at += timedelta(seconds=30)
        assert deliver_pending(engine, clock=clock, timeout=5).retrying == 1
        clock.at += timedelta(seconds=60)
        assert deliver_pending(engine, clock=clock, timeout=5).succeeded == 1
        clock.at += timedelta(days=1)
        assert deliver_pending(engine, clock=clock, timeout=5).claimed == 0
    assert receiver.requests == 3 and receiver.bad_signatures == 0
    [(unique_key, body)] = receiver.events.items()
    assert body["webhook_type"] == "invoice.created" and body["object_type"] == "invoice"
    assert body["invoice"] == INVOICE
    assert body["organization_id"] == signing_key(engine).organization_id
    [webhook] = list_webhooks(engine)
    assert webhook["lago_id"] == unique_key
    assert (webhook["status"], webhook["attempts"], webhook["http_status"]) == ("succeeded", 3,
                                                                                 200)
    assert mismatches(webhook, WebhookDelivery) == []
    shown, attempts = webhook_attempts(engine, unique_key)
    assert shown == webhook
    assert [mismatches(a, WebhookAttempt) for a in attempts] == [[], [], []]
    assert [a["http_status"] for a in attempts] == [500, 500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    with pytest.raises(WebhookError, match="delivered already"):  # retry_service_spec.rb
        requeue(engine, unique_key)


def test_dead_after_the_last_attempt_then_one_manual_redelivery(engine: Engine) -> None:
    with receiving(fail_first=3) as receiver:
        _endpoint(engine, receiver.url)
        receiver.key = signing_key(engine).hmac_key
        _enqueue(engine)
        clock = Clock(T0)
        for _ in range(2):
            deliver_pending(engine, clock=clock, timeout=5, max_attempts=2)
            clock.at += timedelta(hours=1)
        [webhook] = list_webhooks(engine)
        assert (webhook["status"], webhook["attempts"]) == ("failed", 2)
        assert deliver_pending(engine, clock=clock, timeout=5, max_attempts=2).claimed == 0
        requeue(engine, webhook["lago_id"])  # one more attempt: it fails, dead again
        assert deliver_pending(engine, timeout=5, max_attempts=2,
                               only=[webhook["lago_id"]]).failed == 1
        requeue(engine, webhook["lago_id"])
        assert deliver_pending(engine, timeout=5, max_attempts=2,
                               only=[webhook["lago_id"]]).succeeded == 1
    assert len(receiver.events) == 1 and receiver.requests == 4


def test_event_types_filter_and_every_endpoint_gets_its_own(engine: Engine) -> None:
    with receiving() as a, receiving() as b:
        _endpoint(engine, a.url)
        _endpoint(engine, b.url, event_types=["wallet_transaction.created"])
        a.key = b.key = signing_key(engine).hmac_key
        assert _enqueue(engine) == 1  # only the endpoint taking every type
        with engine.begin() as conn:
            assert enqueue(conn, "wallet_transaction.created", "wallet_transaction",
                           {"lago_id": "t1"}) == 2
        assert deliver_pending(engine, clock=Clock(T0), timeout=5).succeeded == 3
    assert len(a.events) == 2 and len(b.events) == 1


def test_a_rolled_back_change_leaves_no_webhook(engine: Engine) -> None:
    _endpoint(engine, "http://127.0.0.1:9/never")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        enqueue(conn, "invoice.created", "invoice", INVOICE)
        raise RuntimeError("the change failed")
    assert list_webhooks(engine) == []


def test_a_hanging_receiver_never_blocks_billing(engine: Engine) -> None:
    """A receiver that never answers: the delivery waits out its timeout in its own
    transaction-free POST, while a billing transaction that enqueues commits at once."""
    hang = threading.Event()
    with receiving(hang=hang) as receiver:
        _endpoint(engine, receiver.url)
        _enqueue(engine)
        done: list[Any] = []
        deliverer = threading.Thread(
            target=lambda: done.append(deliver_pending(engine, clock=Clock(T0), timeout=0.5,
                                                   limit=1)))
        deliverer.start()
        while receiver.requests == 0:  # the POST is in flight
            time.sleep(0.01)
        started = time.monotonic()
        with engine.begin() as conn:  # billing enqueues; no row of the outbox is locked
            enqueue(conn, "invoice.created", "invoice", INVOICE, key="another")
            conn.execute(text("update webhooks set updated_at = now()"))
        assert time.monotonic() - started < 0.4  # not waiting for the receiver
        deliverer.join(10)
        hang.set()
    assert done[0].retrying == 1
    statuses = sorted(w["status"] for w in list_webhooks(engine))
    assert statuses == ["pending", "retrying"]
    [webhook] = [w for w in list_webhooks(engine) if w["status"] == "retrying"]
    _, [attempt] = webhook_attempts(engine, webhook["lago_id"])
    assert attempt["http_status"] is None and "Timeout" in attempt["error"]


def test_a_removed_endpoint_gets_nothing_more(engine: Engine) -> None:
    from tallyflow.tasks.webhooks import remove_endpoint

    lago_id = _endpoint(engine, "http://127.0.0.1:9/never")
    _enqueue(engine)
    remove_endpoint(engine, lago_id)
    assert _enqueue(engine) == 0
    [webhook] = list_webhooks(engine)
    assert (webhook["status"], webhook["last_error"]) == ("failed", "endpoint removed")
    assert deliver_pending(engine, clock=Clock(T0)).claimed == 0
