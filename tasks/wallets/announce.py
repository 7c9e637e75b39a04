"""Wallet movements announced by webhook, in the transaction that writes them
(docs/architecture.md §17): ``wallet_transaction.created`` for every new ledger row
(lago-api ``app/services/webhooks/wallet_transactions/created_service.rb``) and
``wallet.depleted_ongoing_balance`` when a wallet's balance crosses into "depleted"
(``wallets/depleted_ongoing_balance_service.rb``).

``transaction_object`` is Lago's wallet transaction, the one shape both the API and the
webhook send (it lives here, below the API, so the webhook written by the ledger can use it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.models.lago.money import amount
from tallyflow.models.lago.resources import WalletTransaction
from tallyflow.models.lago.times import iso_z
from tallyflow.models.wallets import cents_value, credits_text
from tallyflow.tasks.webhooks import enqueue, enqueue_many, subscribed


def transaction_status(source: str, status: str, credits: Any, granted: Any) -> str:
    """Lago's ``transaction_status``: purchased, granted, voided or invoiced (consumed)."""
    if source == "expiration" or status == "voided":
        return "voided"
    if source == "usage":
        return "invoiced"
    return "granted" if granted == credits and credits > 0 else "purchased"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def transaction_object(row: Any) -> WalletTransaction:
    """Lago's wallet transaction from a row with the ledger's columns and its wallet's
    ``currency`` and ``priority``."""
    return {
        "lago_id": str(row.id),
        "lago_wallet_id": str(row.wallet_id),
        # its credit invoice, when the row read names one (none yet when it is announced)
        "lago_invoice_id": _text(getattr(row, "lago_invoice_id", None)),
        "status": row.status,
        "source": row.source,
        "transaction_status": transaction_status(row.source, row.status, row.credits,
                                                  row.granted_credits),
        "transaction_type": row.direction,
        "amount": amount(row.amount_cents, row.currency),
        "amount_cents": cents_value(row.amount_cents),
        "credit_amount": credits_text(row.credits),
        "priority": row.priority,
        "settled_at": iso_z(row.settled_at),
        "created_at": iso_z(row.created_at),
    }


_TRANSACTIONS = text(
    """
    select t.id, t.wallet_id, t.direction, t.status, t.source, t.credits, t.granted_credits,
           t.amount_cents, t.created_at, t.settled_at, w.currency, w.priority
    from wallet_transactions t join wallets w on w.id = t.wallet_id
    where t.id = any(cast(:ids as bigint[])) order by t.id
    """
)


def announce_transactions(conn: Connection, transaction_ids: Sequence[int]) -> None:
    """``wallet_transaction.created`` for these new ledger rows (nothing read without an
    endpoint taking it); keyed by the row, so a rerun never announces one twice."""
    if not transaction_ids or not subscribed(conn, "wallet_transaction.created"):
        return
    enqueue_many(conn, "wallet_transaction.created", "wallet_transaction", [
        (dict(transaction_object(row)), f"wallet_transaction.created:{row.id}")
        for row in conn.execute(_TRANSACTIONS, {"ids": list(transaction_ids)})])


_WALLETS = text(
    """
    select w.id, w.code, w.name, w.status, w.currency, w.rate_amount, w.priority, w.created_at,
           c.id as customer_id, c.external_id, b.credits_balance, b.balance_cents,
           b.consumed_credits, b.consumed_amount_cents, b.granted_credits_balance
    from wallets w join customers c on c.id = w.customer_id
    join wallet_balances b on b.wallet_id = w.id
    where w.id = any(cast(:ids as bigint[])) order by w.id
    """
)


def announce_depleted(conn: Connection, alerts: Sequence[tuple[int, str]],
                      ongoing: Mapping[int, tuple[Decimal, Decimal]] | None = None) -> None:
    """``wallet.depleted_ongoing_balance`` for these (wallet, alert key) crossings: once per
    crossing (the alert's own unique key), with the wallet's balances as they are now and
    its ongoing balance as the evaluation saw it (``ongoing``: wallet -> (credits, money);
    Lago's ``credits_ongoing_balance``, ``ongoing_balance_cents``)."""
    if not alerts or not subscribed(conn, "wallet.depleted_ongoing_balance"):
        return
    keys = dict(alerts)
    for w in conn.execute(_WALLETS, {"ids": sorted(keys)}):
        credits, cents = (ongoing or {}).get(w.id, (w.credits_balance, w.balance_cents))
        payload = {
            "lago_id": str(w.id), "lago_customer_id": str(w.customer_id),
            "external_customer_id": w.external_id, "code": w.code, "name": w.name,
            "status": w.status, "currency": w.currency, "rate_amount": str(w.rate_amount),
            "priority": w.priority, "created_at": iso_z(w.created_at),
            "credits_balance": credits_text(w.credits_balance),
            "balance_cents": cents_value(w.balance_cents),
            "credits_ongoing_balance": credits_text(credits),
            "ongoing_balance_cents": cents_value(cents),
            "consumed_credits": credits_text(w.consumed_credits),
            "consumed_amount_cents": cents_value(w.consumed_amount_cents),
            "granted_credits_balance": credits_text(w.granted_credits_balance),
        }
        enqueue(conn, "wallet.depleted_ongoing_balance", "wallet", payload,
                key=f"wallet.depleted_ongoing_balance:{keys[w.id]}")
