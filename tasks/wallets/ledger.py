"""The wallet ledger: every credit movement is one idempotent posting.

Why it converges (docs/architecture.md §3, invariant 4):
- Every credit movement is a ``wallet_transactions`` row with a unique idempotency key, and
  every balance change is made by the *same statement* that inserts or settles those rows
  (``_POST``: INSERT ... ON CONFLICT DO NOTHING RETURNING feeding an UPDATE of
  ``wallet_balances``), so a row that already exists moves nothing and balances are always the
  settled ledger's sums.
- Writers that read balances before deciding (deductions, target top-ups, expiry, manual
  top-ups, mark-paid) first lock the customer's ``wallet_balances`` rows with
  ``SELECT ... FOR UPDATE`` ordered by wallet id, then read in READ COMMITTED, so the second of
  two concurrent runs sees the first one's rows and computes a zero delta. Row locks (not
  advisory locks) because a batch locks thousands of customers and row locks do not use the
  shared lock table. The same ordering everywhere keeps them deadlock-free; a deadlock or a
  dropped connection anyway only rolls back one batch, which the task retries.
- Usage is deducted as deltas: ``wallet_usage_positions`` keeps, per (subscription, period),
  the cents the ledger has deducted and a revision; it changes in the deducting transaction.
  The keys of a posting are ``usage:<sub>:<period>:<revision>:<wallet>``: a function of the
  state read under the lock, so even an unlocked duplicate would collide instead of adding.

The functions take an ``Engine`` and are plain (tested without Prefect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection, text

from tallyflow.infra.settings import get_settings
from tallyflow.models.wallets import (
    ZERO,
    cents_for,
    round_credits,
)
from tallyflow.tasks.wallets.announce import announce_transactions

SETTLE_PAID_ENV: Final = "TALLYFLOW_WALLETS_SETTLE_PAID"


DEFAULT_BATCH: Final = 2_500


DEFAULT_GRACE_HOURS: Final = 24


class WalletError(ValueError):
    """A request that cannot be honoured (unknown customer or wallet, bad amount): not retried."""


def settle_paid_default() -> bool:
    """Whether purchased credits settle at once (prepaid contracts) unless a caller says."""
    return get_settings().wallets_settle_paid


@dataclass(frozen=True)
class LedgerRow:
    """One wallet transaction to post (inserted at most once, by ``idempotency_key``)."""

    wallet_id: int
    customer_id: int
    direction: str
    status: str
    source: str
    credits: Decimal
    amount_cents: Decimal
    idempotency_key: str
    granted_credits: Decimal = ZERO
    subscription_id: int | None = None
    period_start: datetime | None = None
    snapshot_id: int | None = None
    rule_position: int | None = None
    note: str | None = None


_POST = text(
    """
    with r as (
      select * from unnest(
        cast(:wallet_id as bigint[]), cast(:customer_id as bigint[]),
        cast(:direction as text[]), cast(:status as text[]), cast(:source as text[]),
        cast(:credits as numeric[]), cast(:granted as numeric[]), cast(:amount as numeric[]),
        cast(:subscription_id as bigint[]), cast(:period_start as timestamptz[]),
        cast(:snapshot_id as bigint[]), cast(:rule_position as integer[]),
        cast(:idempotency_key as text[]), cast(:note as text[])
      ) as r(wallet_id, customer_id, direction, status, source, credits, granted_credits,
             amount_cents, subscription_id, period_start, snapshot_id, rule_position,
             idempotency_key, note)
    ), ins as (
      insert into wallet_transactions (wallet_id, customer_id, direction, status, source,
        credits, granted_credits, amount_cents, subscription_id, period_start, snapshot_id,
        rule_position, idempotency_key, note, as_of, run_id, settled_at)
      select wallet_id, customer_id, direction, status, source, credits, granted_credits,
             amount_cents, subscription_id, period_start, snapshot_id, rule_position,
             idempotency_key, note, :as_of, :run_id,
             case when status = 'settled' then now() end
      from r
      order by idempotency_key
      on conflict (idempotency_key) do nothing
      returning id, wallet_id, direction, status, source, credits, granted_credits,
                amount_cents
    ), moved as (
      select wallet_id,
        coalesce(sum(case when direction = 'inbound' then credits else -credits end)
                 filter (where status = 'settled'), 0) as credits,
        coalesce(sum(case when direction = 'inbound' then granted_credits
                          else -granted_credits end)
                 filter (where status = 'settled'), 0) as granted,
        coalesce(sum(case when direction = 'inbound' then amount_cents else -amount_cents end)
                 filter (where status = 'settled'), 0) as cents,
        coalesce(sum(credits) filter (where status = 'pending' and direction = 'inbound'), 0)
          as pending,
        coalesce(sum(case when direction = 'outbound' then credits else -credits end)
                 filter (where status = 'settled' and source in ('usage', 'invoice')), 0)
          as consumed,
        coalesce(sum(case when direction = 'outbound' then amount_cents else -amount_cents end)
                 filter (where status = 'settled' and source in ('usage', 'invoice')), 0)
          as consumed_cents
      from ins group by wallet_id
    ), upd as (
      update wallet_balances b set
        credits_balance = b.credits_balance + m.credits,
        granted_credits_balance = b.granted_credits_balance + m.granted,
        balance_cents = b.balance_cents + m.cents,
        pending_credits = b.pending_credits + m.pending,
        consumed_credits = b.consumed_credits + m.consumed,
        consumed_amount_cents = b.consumed_amount_cents + m.consumed_cents,
        updated_at = now()
      from moved m where b.wallet_id = m.wallet_id
      returning b.wallet_id
    )
    select (select count(*) from ins) as inserted, (select count(*) from upd) as wallets,
           array(select id from ins order by id) as ids
    """
)


def post(
    conn: Connection, rows: Sequence[LedgerRow], as_of: datetime, run_id: int | None = None
) -> int:
    """Insert ledger rows not posted yet and move balances by them, in one statement.

    Returns how many rows were new. The wallets must have ``wallet_balances`` rows
    (``open_wallets``); the statement is atomic, so ledger and balances cannot disagree.
    """
    if not rows:
        return 0
    params: dict[str, Any] = {
        "wallet_id": [r.wallet_id for r in rows],
        "customer_id": [r.customer_id for r in rows],
        "direction": [r.direction for r in rows],
        "status": [r.status for r in rows],
        "source": [r.source for r in rows],
        "credits": [r.credits for r in rows],
        "granted": [r.granted_credits for r in rows],
        "amount": [r.amount_cents for r in rows],
        "subscription_id": [r.subscription_id for r in rows],
        "period_start": [r.period_start for r in rows],
        "snapshot_id": [r.snapshot_id for r in rows],
        "rule_position": [r.rule_position for r in rows],
        "idempotency_key": [r.idempotency_key for r in rows],
        "note": [r.note for r in rows],
        "as_of": as_of,
        "run_id": run_id,
    }
    posted = conn.execute(_POST, params).one()
    announce_transactions(conn, posted.ids)
    return int(posted.inserted)


_LOCK_CUSTOMERS = text(
    """
    select b.wallet_id from wallet_balances b
    where b.customer_id = any(cast(:ids as bigint[]))
    order by b.wallet_id
    for update
    """
)


def lock_customers(conn: Connection, customer_ids: Sequence[int]) -> None:
    """Serialise writers per customer: lock all its balance rows, always in wallet-id order."""
    conn.execute(_LOCK_CUSTOMERS, {"ids": sorted(set(customer_ids))})


def _top_up_rows(
    wallet_id: int,
    customer_id: int,
    rate_amount: Decimal,
    paid: Decimal,
    granted: Decimal,
    *,
    currency: str,
    settle_paid: bool,
    source: str,
    key: str,
    rule_position: int | None = None,
    note: str | None = None,
) -> list[LedgerRow]:
    """A top-up as Lago posts it: granted credits settled at once, purchased ones pending
    until paid (or settled at once for prepaid contracts)."""
    rows: list[LedgerRow] = []
    granted, paid = round_credits(granted), round_credits(paid)
    if granted > 0:
        rows.append(LedgerRow(
            wallet_id, customer_id, "inbound", "settled", source, granted,
            cents_for(granted, rate_amount, currency), f"{key}:granted", granted_credits=granted,
            rule_position=rule_position, note=note,
        ))
    if paid > 0:
        rows.append(LedgerRow(
            wallet_id, customer_id, "inbound", "settled" if settle_paid else "pending", source,
            paid, cents_for(paid, rate_amount, currency), f"{key}:paid",
            rule_position=rule_position, note=note,
        ))
    return rows


def _since(as_of: datetime, grace_hours: int) -> datetime:
    return as_of - timedelta(hours=grace_hours)


# What each wallet has settled toward each (subscription, period) of usage: the deductions'
# deltas, the overview and the invoice's prepaid credits all read it (in wallet order).
USAGE_DEDUCTED = text(
    """
    select k.sid as subscription_id, k.ps as period_start, t.wallet_id, t.amount_cents,
           t.credits, t.granted_credits
    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as k(sid, ps)
    -- LATERAL with its own aggregate (not flattened): one index probe per (subscription,
    -- period) whatever the statistics say; a plain join on a ledger grown since its last
    -- ANALYZE was planned as 63M join-filter rows per batch of 500 invoices at 100,000
    cross join lateral (
      select t.wallet_id,
        sum(case when t.direction = 'outbound' then t.amount_cents else -t.amount_cents end)
          as amount_cents,
        sum(case when t.direction = 'outbound' then t.credits else -t.credits end) as credits,
        sum(case when t.direction = 'outbound' then t.granted_credits
                 else -t.granted_credits end) as granted_credits
      from wallet_transactions t
      where t.subscription_id = k.sid and t.period_start = k.ps
        and t.source = 'usage' and t.status = 'settled'
      group by t.wallet_id) t
    order by t.wallet_id
    """
)


def _customer_id(conn: Connection, external_customer_id: str) -> int:
    found = conn.execute(
        text("select id from customers where external_id = :e"), {"e": external_customer_id}
    ).scalar()
    if found is None:
        raise WalletError(f"unknown customer {external_customer_id!r}")
    return int(found)


def _pick_wallet(conn: Connection, customer_id: int, code: str | None) -> int:
    wallets = conn.execute(
        text("select id, code from wallets where customer_id = :c and status = 'active'"
             " order by priority, created_at, id"),
        {"c": customer_id},
    ).all()
    if code is not None:
        for w in wallets:
            if w.code == code:
                return int(w.id)
        raise WalletError(f"no active wallet {code!r} for this customer")
    if not wallets:
        raise WalletError("the customer has no active wallet")
    if len(wallets) > 1:
        raise WalletError("the customer has several wallets: say which with --wallet "
                          f"({', '.join(w.code for w in wallets)})")
    return int(wallets[0].id)
