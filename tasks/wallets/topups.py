"""Top-ups: recurring interval and threshold rules, manual top-ups, marking paid credits paid."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, text

from tallyflow.models.lago.times import iso_key
from tallyflow.models.wallets import (
    interval_start,
    threshold_reached,
    top_up_credits,
)
from tallyflow.tasks.wallets.ledger import (
    LedgerRow,
    WalletError,
    _customer_id,
    _pick_wallet,
    _top_up_rows,
    lock_customers,
    post,
    settle_paid_default,
)
from tallyflow.tasks.wallets.lifecycle import open_wallets

_RULES = text(
    """
    select r.wallet_id, r.position, r.method, r.interval, r.paid_credits, r.granted_credits,
           r.threshold_credits, r.target_ongoing_balance, r.started_at, w.created_at,
           b.customer_id, w.rate_amount, w.currency, b.credits_balance, b.pending_credits
    from wallet_recurring_rules r
    join wallets w on w.id = r.wallet_id
    join wallet_balances b on b.wallet_id = w.id
    where r.trigger = :trigger and w.status = 'active'
      and (w.expiration_at is null or w.expiration_at > :as_of)
      and (r.started_at is null or r.started_at <= :as_of)
      and (r.expiration_at is null or r.expiration_at > :as_of)
      and (:trigger <> 'threshold'
           or b.credits_balance + b.pending_credits <= r.threshold_credits)
    order by b.wallet_id, r.position
    for update of b
    """
)


def interval_top_ups(
    engine: Engine, as_of: datetime, settle_paid: bool, run_id: int | None = None
) -> int:
    """Post the interval top-ups due in the interval containing ``as_of``, once per interval.

    The interval is counted from the rule's ``started_at`` (its first top-up at that moment)
    or else from the wallet's creation (whose first interval the initial top-up covers). The
    key ``interval:<wallet>:<position>:<interval start>`` makes each interval post once; a
    missed interval is not caught up (Prefect does no catch-up either: backfill by ``--at``).
    Returns how many top-ups were posted.
    """
    with engine.begin() as conn:
        rows: list[LedgerRow] = []
        for r in conn.execute(_RULES, {"trigger": "interval", "as_of": as_of}):
            found = interval_start(r.started_at or r.created_at, r.interval, as_of)
            if found is None or (found[0] == 0 and r.started_at is None):
                continue
            paid, granted = top_up_credits(
                r.method, r.paid_credits, r.granted_credits, r.target_ongoing_balance,
                r.credits_balance + r.pending_credits,
            )
            rows.extend(_top_up_rows(
                r.wallet_id, r.customer_id, r.rate_amount, paid, granted,
                currency=r.currency, settle_paid=settle_paid, source="interval",
                rule_position=r.position,
                key=f"interval:{r.wallet_id}:{r.position}:{iso_key(found[1])}",
            ))
        return _count_top_ups(post(conn, rows, as_of, run_id), rows)


def _count_top_ups(inserted: int, rows: Sequence[LedgerRow]) -> int:
    if not inserted:
        return 0
    return len({row.idempotency_key.rsplit(":", 1)[0] for row in rows})


def threshold_top_ups(
    engine: Engine, as_of: datetime, settle_paid: bool, run_id: int | None = None
) -> int:
    """Top up wallets whose ongoing balance fell to a threshold rule's ``threshold_credits``.

    The ongoing balance counts purchases still pending, so a top-up awaiting payment is not
    fired again every hour. Keys ``threshold:<wallet>:<position>:<n>`` with n the number of
    the rule's earlier rows, read under the lock: one top-up per crossing. A crossing ends
    when the ongoing balance rises above the threshold: while it has not since the rule's
    last top-up (a top-up too small to lift it), a rerun, a retry or a concurrent run of the
    same hour must not top it up again.
    """
    with engine.begin() as conn:
        due = conn.execute(_RULES, {"trigger": "threshold", "as_of": as_of}).all()
        if not due:
            return 0
        counts: dict[tuple[int, int], int] = {}
        last_ids: dict[tuple[int, int], int] = {}
        for c in conn.execute(
            text(
                """
                select wallet_id, rule_position, count(*) as n, max(id) as last_id
                from wallet_transactions
                where source = 'threshold' and wallet_id = any(cast(:ids as bigint[]))
                group by wallet_id, rule_position
                """
            ),
            {"ids": sorted({r.wallet_id for r in due})},
        ):
            counts[(int(c.wallet_id), int(c.rule_position))] = int(c.n)
            last_ids[(int(c.wallet_id), int(c.rule_position))] = int(c.last_id)
        since = _ledger_since(conn, last_ids)
        rows: list[LedgerRow] = []
        fired: set[int] = set()
        for r in due:
            ongoing = r.credits_balance + r.pending_credits
            if r.wallet_id in fired or not threshold_reached(ongoing, r.threshold_credits):
                continue  # one rule per wallet per run: the first fills it up
            paid, granted = top_up_credits(
                r.method, r.paid_credits, r.granted_credits, r.target_ongoing_balance, ongoing
            )
            n = counts.get((r.wallet_id, r.position), 0)
            last_id = last_ids.get((r.wallet_id, r.position))
            if last_id is not None and not _rose_above(
                since.get(r.wallet_id, []), last_id, ongoing, r.threshold_credits
            ):
                continue  # still the crossing its last top-up was for
            new = _top_up_rows(
                r.wallet_id, r.customer_id, r.rate_amount, paid, granted,
                currency=r.currency, settle_paid=settle_paid, source="threshold",
                rule_position=r.position,
                key=f"threshold:{r.wallet_id}:{r.position}:{n}",
            )
            if new:
                fired.add(r.wallet_id)
                rows.extend(new)
        return _count_top_ups(post(conn, rows, as_of, run_id), rows)


def _ledger_since(
    conn: Connection, last_ids: dict[tuple[int, int], int]
) -> dict[int, list[tuple[int, Decimal]]]:
    """Per wallet, its ledger rows from its rules' oldest last top-up on: (id, ongoing delta)."""
    first: dict[int, int] = {}
    for (wallet_id, _), last_id in last_ids.items():
        first[wallet_id] = min(first.get(wallet_id, last_id), last_id)
    out: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    if not first:
        return out
    for row in conn.execute(
        text(
            """
            select t.wallet_id, t.id,
              case when t.status = 'voided' then 0
                   when t.direction = 'inbound' then t.credits else -t.credits end as delta
            from wallet_transactions t
            join unnest(cast(:ids as bigint[]), cast(:firsts as bigint[])) as k(wid, first_id)
              on t.wallet_id = k.wid and t.id >= k.first_id
            order by t.wallet_id, t.id
            """
        ),
        {"ids": list(first), "firsts": list(first.values())},
    ):
        out[int(row.wallet_id)].append((int(row.id), Decimal(row.delta)))
    return out


def _rose_above(
    rows: Sequence[tuple[int, Decimal]], last_id: int, ongoing: Decimal, threshold: Decimal
) -> bool:
    """Whether the ongoing balance was above ``threshold`` after any ledger row from the
    rule's last top-up (``last_id``) on; ``ongoing`` is the balance after the last row."""
    after = ongoing
    for row_id, delta in reversed(rows):
        if row_id < last_id:
            break
        if not threshold_reached(after, threshold):
            return True
        after -= delta
    return False


@dataclass
class TopUp:
    wallet_id: int
    wallet_code: str
    posted: int
    idempotency_key: str


def top_up(
    engine: Engine, external_customer_id: str, paid_credits: Decimal, granted_credits: Decimal,
    *, wallet_code: str | None = None, settle_paid: bool | None = None,
    key: str | None = None, as_of: datetime | None = None,
) -> TopUp:
    """A manual top-up. Pass ``key`` to make a retried request post once (default: new)."""
    if paid_credits < 0 or granted_credits < 0 or paid_credits + granted_credits <= 0:
        raise WalletError("a top-up needs positive paid and/or granted credits")
    settle = settle_paid_default() if settle_paid is None else settle_paid
    moment = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        customer_id = _customer_id(conn, external_customer_id)
    open_wallets(engine, moment, settle, customer_ids=[customer_id])
    with engine.begin() as conn:
        wallet_id = _pick_wallet(conn, customer_id, wallet_code)
        lock_customers(conn, [customer_id])
        w = conn.execute(text("select code, rate_amount, currency from wallets where id = :w"),
                         {"w": wallet_id}).one()
        idem = f"manual:{key or uuid.uuid4().hex}"
        rows = _top_up_rows(wallet_id, customer_id, w.rate_amount, paid_credits,
                            granted_credits, currency=w.currency, settle_paid=settle,
                            source="manual", key=idem)
        return TopUp(wallet_id, w.code, post(conn, rows, moment), idem)


# Settling pending purchased credits: the one statement, for ``wallets mark-paid`` (by customer,
# wallet or transaction) and for paying a credit invoice (its transactions,
# tasks/invoicing/credit.py). The balance moves in the same statement, and the credit invoices of
# what settled are marked paid with it. Returns how many transactions settled.
_SETTLE = text(
    """
    with settled as (
      update wallet_transactions t set status = 'settled', settled_at = now()
      where t.status = 'pending' and t.direction = 'inbound'
        and (cast(:c as bigint) is null or t.customer_id = cast(:c as bigint))
        and (cast(:w as bigint) is null or t.wallet_id = cast(:w as bigint))
        and (cast(:t as bigint) is null or t.id = cast(:t as bigint))
        and (cast(:invoice as bigint) is null or t.id in (
              select f.wallet_transaction_id from invoice_fees f
              where f.invoice_id = cast(:invoice as bigint)))
      returning t.id, t.wallet_id, t.credits, t.granted_credits, t.amount_cents
    ), invoiced as (
      -- their credit invoices are paid now too (tasks/invoicing/credit.py)
      update invoices v set payment_status = 'succeeded', updated_at = now()
      from invoice_fees f join settled s on s.id = f.wallet_transaction_id
      where v.id = f.invoice_id and v.payment_status <> 'succeeded'
      returning v.id
    ), moved as (
      select wallet_id, sum(credits) as credits, sum(granted_credits) as granted,
             sum(amount_cents) as cents, count(*) as n
      from settled group by wallet_id
    ), upd as (
      update wallet_balances b set credits_balance = b.credits_balance + m.credits,
        granted_credits_balance = b.granted_credits_balance + m.granted,
        balance_cents = b.balance_cents + m.cents,
        pending_credits = b.pending_credits - m.credits, updated_at = now()
      from moved m where b.wallet_id = m.wallet_id returning b.wallet_id
    )
    select coalesce((select sum(n) from moved), 0)
    """
)


def settle_pending(
    conn: Connection, *, customer_id: int | None = None, wallet_id: int | None = None,
    transaction_id: int | None = None, invoice_id: int | None = None,
) -> int:
    """Settle the pending purchased credits these arguments select (all that are given must
    hold); the caller holds the customer's row lock (``lock_customers``)."""
    return int(conn.execute(_SETTLE, {"c": customer_id, "w": wallet_id, "t": transaction_id,
                                      "invoice": invoice_id}).scalar_one())


def mark_paid(
    engine: Engine, external_customer_id: str, wallet_code: str | None = None,
    transaction_id: int | None = None,
) -> int:
    """Settle pending purchased credits (all of the customer's, one wallet's or one
    transaction); the balance moves in the same statement. Returns how many settled."""
    with engine.begin() as conn:
        customer_id = _customer_id(conn, external_customer_id)
        lock_customers(conn, [customer_id])
        wallet_id = _pick_wallet(conn, customer_id, wallet_code) if wallet_code else None
        return settle_pending(conn, customer_id=customer_id, wallet_id=wallet_id,
                              transaction_id=transaction_id)
