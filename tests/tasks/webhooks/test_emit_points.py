"""Each emit point writes its webhook in the transaction of its change, in Lago's envelope,
once per logical event however often billing reruns (lago-api spec/services/webhooks/
invoices/created_service_spec.rb, invoices/payment_status_updated_service_spec.rb,
wallet_transactions/created_service_spec.rb, wallets/depleted_ongoing_balance_service_spec.rb,
subscriptions/terminated_service_spec.rb, events/error_service_spec.rb)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import record_payment
from tallyflow.tasks.subscriptions import terminate_subscription
from tallyflow.tasks.wallets import evaluate_alerts
from tallyflow.tasks.webhooks import add_endpoint
from tests.tasks.invoicing.test_invoicing import CLOSE, _finalized, hour


def _bodies(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(b) for b in conn.execute(text("select body from webhooks"
                                                         " order by id")).scalars()]


def test_billing_emits_each_logical_event_once(engine: Engine, tmp_path: Path) -> None:
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks"})
    invoice = _finalized(engine, tmp_path, plan={"amount_cents": 3100})
    before = _bodies(engine)
    kinds = Counter(b["webhook_type"] for b in before)
    assert kinds["invoice.created"] >= 1 and kinds["wallet_transaction.created"] >= 1
    [created] = [b for b in before if b["webhook_type"] == "invoice.created"
                 and b["invoice"]["invoice_type"] == "subscription"]
    assert created["object_type"] == "invoice"
    assert created["invoice"]["lago_id"] == invoice["lago_id"]
    assert created["invoice"]["status"] == "finalized" and created["invoice"]["number"]
    transaction = next(b for b in before if b["webhook_type"] == "wallet_transaction.created")
    assert set(transaction["wallet_transaction"]) >= {"lago_id", "lago_wallet_id", "amount",
                                                       "credit_amount", "transaction_status"}
    hour(engine, CLOSE)  # a rerun announces nothing again
    assert _bodies(engine) == before
    record_payment(engine, invoice["lago_id"], "succeeded")
    [paid] = [b for b in _bodies(engine) if b["webhook_type"] ==
              "invoice.payment_status_updated"]
    assert paid["invoice"]["payment_status"] == "succeeded"
    terminate_subscription(engine, "sub_acme_001", now=datetime(2025, 4, 2, tzinfo=UTC))
    [ended] = [b for b in _bodies(engine) if b["webhook_type"] == "subscription.terminated"]
    assert ended["subscription"]["external_id"] == "sub_acme_001"
    assert ended["subscription"]["status"] == "terminated"


def test_a_depleted_wallet_is_announced_once_per_crossing(engine: Engine,
                                                          tmp_path: Path) -> None:
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks",
                          "event_types": ["wallet.depleted_ongoing_balance"]})
    _finalized(engine, tmp_path, plan={"amount_cents": 3100})
    with engine.begin() as conn:
        conn.execute(text("update wallet_balances set credits_balance = 0"))
    evaluate_alerts(engine, CLOSE)
    evaluate_alerts(engine, CLOSE)
    [depleted] = _bodies(engine)
    assert depleted["webhook_type"] == "wallet.depleted_ongoing_balance"
    assert depleted["wallet"]["credits_balance"] in ("0", "0.00000")
