"""Wallet ledger I/O: open wallets, expire them, top them up, deduct usage, raise alerts.

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

The functions take an ``Engine`` and are plain (tested without Prefect); the ``*_task``
wrappers at the end add retries for transient failures only (``tasks.retry``).
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from prefect import task
from sqlalchemy import Connection, Engine, text

from models.rating.money import round_minor
from models.wallets import (
    ALERT_BELOW,
    ALERT_DEPLETED,
    ZERO,
    Allocation,
    Deducted,
    Posting,
    WalletFunds,
    alert_change,
    alert_condition,
    allocate_correction,
    allocate_usage,
    apply_posting,
    cents_for,
    cents_value,
    credits_for,
    credits_text,
    interval_start,
    round_credits,
    threshold_reached,
    top_up_credits,
)
from tallyflow.failpoints import failpoint
from tallyflow.resources import billing_engine
from tasks.retry import transient_retries

SETTLE_PAID_ENV: Final = "TALLYFLOW_WALLETS_SETTLE_PAID"
DEFAULT_BATCH: Final = 2_500
DEFAULT_GRACE_HOURS: Final = 24
MAX_ALERT_EVENTS: Final = 100

# Test seam: called as (connection, checkpoint name) inside the writing transactions, so tests
# can kill the backend or raise half-way through a batch. Empty in production.
FAULTS: list[Callable[[Connection, str], None]] = []


class WalletError(ValueError):
    """A request that cannot be honoured (unknown customer or wallet, bad amount): not retried."""


def settle_paid_default() -> bool:
    """Whether purchased credits settle at once (prepaid contracts) unless a caller says."""
    return os.environ.get(SETTLE_PAID_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _checkpoint(conn: Connection, name: str) -> None:
    for fault in FAULTS:
        fault(conn, name)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------
# The one way to write the ledger
# --------------------------------------------------------------------------------------------


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
      returning wallet_id, direction, status, source, credits, granted_credits, amount_cents
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
    select (select count(*) from ins) as inserted, (select count(*) from upd) as wallets
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
    return int(conn.execute(_POST, params).one().inserted)


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


# --------------------------------------------------------------------------------------------
# Run history
# --------------------------------------------------------------------------------------------


def start_run(engine: Engine, as_of: datetime, flow_run_id: str | None = None) -> int:
    """A ``wallet_runs`` row for this run (status running until ``finish_run``)."""
    with engine.begin() as conn:
        return int(conn.execute(
            text("insert into wallet_runs (as_of, flow_run_id) values (:a, :f) returning id"),
            {"a": as_of, "f": flow_run_id},
        ).scalar_one())


_RUN_COUNTS = (
    "customers", "wallets_touched", "transactions", "credits_deducted", "amount_cents_deducted",
    "corrections", "credits_corrected", "top_ups", "expired", "alerts", "negative_wallets",
    "uncovered_cents",
)


def finish_run(
    engine: Engine, run_id: int, summary: dict[str, Any], status: str = "completed",
    error: str | None = None,
) -> None:
    """Record the run's totals and outcome (the run history row)."""
    import json

    values = {key: summary.get(key, 0) for key in _RUN_COUNTS}
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                update wallet_runs set status = :status, error = :error, finished_at = now(),
                  customers = :customers, wallets_touched = :wallets_touched,
                  transactions = :transactions, credits_deducted = :credits_deducted,
                  amount_cents_deducted = :amount_cents_deducted, corrections = :corrections,
                  credits_corrected = :credits_corrected, top_ups = :top_ups,
                  expired = :expired, alerts = :alerts, negative_wallets = :negative_wallets,
                  uncovered_cents = :uncovered_cents, summary = cast(:summary as jsonb)
                where id = :id
                """
            ),
            {**values, "status": status, "error": error, "id": run_id,
             "summary": json.dumps(summary, default=str)},
        )


# --------------------------------------------------------------------------------------------
# Opening wallets: the catalog's credits are the initial top-up, posted once
# --------------------------------------------------------------------------------------------


_OPEN = text(
    """
    insert into wallet_balances (wallet_id, customer_id)
    select w.id, w.customer_id from wallets w
    where not exists (select 1 from wallet_balances b where b.wallet_id = w.id)
      and (cast(:only as bigint[]) is null or w.customer_id = any(cast(:only as bigint[])))
    order by w.id
    on conflict (wallet_id) do nothing
    returning wallet_id
    """
)


def open_wallets(
    engine: Engine, as_of: datetime, settle_paid: bool, run_id: int | None = None,
    customer_ids: Sequence[int] | None = None,
) -> int:
    """Give every new catalog wallet a balance row and post its initial top-up.

    The catalog's ``paid_credits``/``granted_credits`` are the wallet's *initial* top-up:
    posted with the keys ``initial:<wallet>:granted|paid`` in the transaction that creates the
    balance row, so a re-applied or edited catalog never posts them again. Returns how many
    wallets were opened.
    """
    with engine.begin() as conn:
        only = list(customer_ids) if customer_ids is not None else None
        opened = [int(r.wallet_id) for r in conn.execute(_OPEN, {"only": only})]
        if not opened:
            return 0
        rows: list[LedgerRow] = []
        for w in conn.execute(
            text(
                "select id, customer_id, rate_amount, currency, paid_credits, granted_credits"
                " from wallets"
                " where id = any(cast(:ids as bigint[])) order by id"
            ),
            {"ids": opened},
        ):
            rows.extend(_top_up_rows(
                w.id, w.customer_id, w.rate_amount, w.paid_credits, w.granted_credits,
                currency=w.currency, settle_paid=settle_paid, source="initial",
                key=f"initial:{w.id}",
            ))
        post(conn, rows, as_of, run_id)
        failpoint("wallets.before_open_commit")
    return len(opened)


# --------------------------------------------------------------------------------------------
# Expiry
# --------------------------------------------------------------------------------------------


def expire_wallets(engine: Engine, as_of: datetime, run_id: int | None = None) -> list[int]:
    """Terminate wallets whose ``expiration_at`` has passed as of the run's time.

    What is left is voided by one outbound ``expiration`` transaction (key
    ``expire:<wallet>``); pending purchases are marked voided. Returns the wallets expired.
    """
    with engine.begin() as conn:
        due = conn.execute(
            text(
                """
                select b.wallet_id, b.customer_id, b.credits_balance, b.granted_credits_balance,
                       b.balance_cents
                from wallet_balances b join wallets w on w.id = b.wallet_id
                where w.status = 'active' and w.expiration_at <= :as_of
                order by b.wallet_id
                for update of b
                """
            ),
            {"as_of": as_of},
        ).all()
        if not due:
            return []
        rows = [
            LedgerRow(
                r.wallet_id, r.customer_id, "outbound", "settled", "expiration",
                r.credits_balance, max(ZERO, r.balance_cents), f"expire:{r.wallet_id}",
                granted_credits=max(ZERO, r.granted_credits_balance),
                note="remaining credits voided at expiration",
            )
            for r in due
            if r.credits_balance > 0
        ]
        post(conn, rows, as_of, run_id)
        ids = [r.wallet_id for r in due]
        conn.execute(
            text(
                """
                with voided as (
                  update wallet_transactions set status = 'voided'
                  where wallet_id = any(cast(:ids as bigint[])) and status = 'pending'
                  returning wallet_id, credits
                ), moved as (select wallet_id, sum(credits) as credits from voided
                             group by wallet_id)
                update wallet_balances b set pending_credits = b.pending_credits - m.credits
                from moved m where b.wallet_id = m.wallet_id
                """
            ),
            {"ids": ids},
        )
        conn.execute(
            text("update wallets set status = 'terminated' where id = any(cast(:ids as bigint[]))"),
            {"ids": ids},
        )
        conn.execute(
            text(
                "update wallet_balances set terminated_at = :as_of, updated_at = now()"
                " where wallet_id = any(cast(:ids as bigint[]))"
            ),
            {"ids": ids, "as_of": as_of},
        )
    return ids


# --------------------------------------------------------------------------------------------
# Recurring top-ups
# --------------------------------------------------------------------------------------------


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
                key=f"interval:{r.wallet_id}:{r.position}:{_iso(found[1])}",
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


# --------------------------------------------------------------------------------------------
# Usage deductions
# --------------------------------------------------------------------------------------------


def _since(as_of: datetime, grace_hours: int) -> datetime:
    return as_of - timedelta(hours=grace_hours)


_DUE = text(
    """
    select distinct s.customer_id
    from usage_amounts a
    join subscriptions s on s.id = a.subscription_id
    left join wallet_usage_positions p
      on p.subscription_id = a.subscription_id and p.period_start = a.period_start
    where a.period_start <= :as_of and a.period_end >= :since
      and a.amount_cents <> coalesce(p.deducted_cents, 0)
      and not exists (select 1 from invoice_subscriptions i
                      join invoices v on v.id = i.invoice_id and v.status = 'finalized'
                      where i.subscription_id = a.subscription_id
                        and i.period_start = a.period_start)
      and exists (select 1 from wallets w join wallet_balances b on b.wallet_id = w.id
                  where w.customer_id = s.customer_id and w.status = 'active')
      and (cast(:only as text[]) is null or s.customer_id in (
             select c.id from customers c where c.external_id = any(cast(:only as text[]))))
    order by 1
    """
)


def due_customers(
    engine: Engine, as_of: datetime, only: Sequence[str] | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> list[int]:
    """Customers whose usage in scope differs from what their wallets have deducted.

    In scope: the billing periods containing ``as_of``, and those that ended less than
    ``grace_hours`` before it (late events of a just-closed period still count). One join of
    ``usage_amounts`` with the positions: cost follows subscriptions, not ledger history.
    """
    with engine.connect() as conn:
        return [
            int(r.customer_id)
            for r in conn.execute(
                _DUE,
                {"as_of": as_of, "since": _since(as_of, grace_hours),
                 "only": list(only) if only is not None else None},
            )
        ]


@dataclass
class Negative:
    """A wallet left below zero by an overflow (reported, and alerted as depleted)."""

    wallet_id: int
    wallet_code: str
    external_customer_id: str
    credits_balance: str
    overflow_cents: int | str


@dataclass
class DeductionBatch:
    """What one batch of customers did to the ledger."""

    customers: int = 0
    wallets: list[int] = field(default_factory=list)
    transactions: int = 0
    credits_deducted: Decimal = ZERO
    amount_cents_deducted: Decimal = ZERO
    corrections: int = 0
    credits_corrected: Decimal = ZERO
    amount_cents_corrected: Decimal = ZERO
    uncovered_cents: Decimal = ZERO
    negative: list[Negative] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)


_SCOPE = text(
    """
    select a.subscription_id, a.period_start, a.currency, a.amount_cents, a.snapshot_id,
           a.external_subscription_id, s.customer_id,
           coalesce(p.deducted_cents, 0) as deducted_cents, coalesce(p.revision, 0) as revision
    from usage_amounts a
    join subscriptions s on s.id = a.subscription_id
    left join wallet_usage_positions p
      on p.subscription_id = a.subscription_id and p.period_start = a.period_start
    where s.customer_id = any(cast(:ids as bigint[]))
      and a.period_start <= :as_of and a.period_end >= :since
      -- a finalized invoice closed the period: its last deduction was made there (invoicing)
      and not exists (select 1 from invoice_subscriptions i
                      join invoices v on v.id = i.invoice_id and v.status = 'finalized'
                      where i.subscription_id = a.subscription_id
                        and i.period_start = a.period_start)
    order by s.customer_id, a.period_start, a.subscription_id
    """
)

_FUNDS = text(
    """
    select w.id, w.customer_id, w.code, c.external_id, w.priority, w.created_at,
           w.rate_amount, w.currency, b.credits_balance, b.granted_credits_balance,
           b.balance_cents,
           (w.status = 'active' and (w.expiration_at is null or w.expiration_at > :as_of))
             as active
    from wallets w
    join wallet_balances b on b.wallet_id = w.id
    join customers c on c.id = w.customer_id
    where w.customer_id = any(cast(:ids as bigint[]))
    order by w.id
    """
)

# What each wallet has settled toward each (subscription, period) of usage: the deductions'
# deltas, the overview and the invoice's prepaid credits all read it (in wallet order).
USAGE_DEDUCTED = text(
    """
    select t.subscription_id, t.period_start, t.wallet_id,
      sum(case when t.direction = 'outbound' then t.amount_cents else -t.amount_cents end)
        as amount_cents,
      sum(case when t.direction = 'outbound' then t.credits else -t.credits end) as credits,
      sum(case when t.direction = 'outbound' then t.granted_credits
               else -t.granted_credits end) as granted_credits
    from wallet_transactions t
    join unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as k(sid, ps)
      on t.subscription_id = k.sid and t.period_start = k.ps
    where t.source = 'usage' and t.status = 'settled'
    group by t.subscription_id, t.period_start, t.wallet_id
    order by t.wallet_id
    """
)

_POSITIONS = text(
    """
    insert into wallet_usage_positions as p (subscription_id, period_start, customer_id,
      deducted_cents, revision, snapshot_id)
    select * from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[]),
                         cast(:customers as bigint[]), cast(:deducted as numeric[]),
                         cast(:revisions as integer[]), cast(:snapshots as bigint[]))
    on conflict (subscription_id, period_start) do update set
      deducted_cents = excluded.deducted_cents, revision = excluded.revision,
      snapshot_id = excluded.snapshot_id, updated_at = now()
    """
)


@dataclass
class _Meta:
    code: str
    external_customer_id: str
    currency: str
    active: bool


def deduct_customers(
    engine: Engine,
    customer_ids: Sequence[int],
    as_of: datetime,
    run_id: int | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> DeductionBatch:
    """Deduct, for these customers, the difference between usage and what is deducted.

    One transaction: lock the customers' wallets, read usage in scope, positions and balances,
    allocate each (subscription, period)'s delta with ``models.wallets`` (growth: outbound by
    priority, overflow into the last wallet; decrease: inbound correction, last consumption
    first), then post all rows and move the positions. A crash or a retry rolls the whole
    batch back; a concurrent run waits on the lock and then finds nothing left to do.
    """
    result = DeductionBatch()
    if not customer_ids:
        return result
    ids = sorted(set(customer_ids))
    since = _since(as_of, grace_hours)
    with engine.begin() as conn:
        lock_customers(conn, ids)
        _checkpoint(conn, "deduct:locked")
        scopes = conn.execute(_SCOPE, {"ids": ids, "as_of": as_of, "since": since}).all()
        funds: dict[int, WalletFunds] = {}
        meta: dict[int, _Meta] = {}
        wallets_of: dict[int, list[int]] = defaultdict(list)
        for w in conn.execute(_FUNDS, {"ids": ids, "as_of": as_of}):
            funds[w.id] = WalletFunds(
                w.id, w.priority, w.created_at, w.rate_amount, w.currency, w.credits_balance,
                w.granted_credits_balance, w.balance_cents,
            )
            meta[w.id] = _Meta(w.code, w.external_id, w.currency, bool(w.active))
            wallets_of[w.customer_id].append(w.id)
        shrinking = [s for s in scopes if round_minor(s.amount_cents) < s.deducted_cents]
        deducted: dict[tuple[int, datetime], list[tuple[int, Decimal, Decimal, Decimal]]] = (
            defaultdict(list)
        )
        if shrinking:
            for d in conn.execute(USAGE_DEDUCTED, {
                "subs": [s.subscription_id for s in shrinking],
                "starts": [s.period_start for s in shrinking],
            }):
                deducted[(d.subscription_id, d.period_start)].append(
                    (d.wallet_id, d.amount_cents, d.credits, d.granted_credits)
                )
        rows: list[LedgerRow] = []
        positions: list[tuple[Any, ...]] = []
        customers_done: set[int] = set()
        overflow: dict[int, Decimal] = {}
        for s in scopes:
            target = round_minor(s.amount_cents)
            delta = target - s.deducted_cents
            if delta == 0:
                continue
            usable = [
                funds[w] for w in wallets_of.get(s.customer_id, [])
                if meta[w].active and meta[w].currency == s.currency
            ]
            if delta > 0:
                allocation = allocate_usage(delta, usable)
            else:
                taken = [
                    Deducted(funds[w], cents, credits, granted)
                    for w, cents, credits, granted in deducted.get(
                        (s.subscription_id, s.period_start), [])
                    if w in funds and meta[w].active
                ]
                allocation = allocate_correction(-delta, taken)
                allocation = _refund_rest(allocation, usable)
            if not allocation.postings:
                result.uncovered_cents += abs(delta)
                continue
            moved = _record(result, allocation, funds, meta, s, overflow)
            for posting in allocation.postings:
                rows.append(LedgerRow(
                    posting.wallet_id, s.customer_id, posting.direction, "settled", "usage",
                    posting.credits, posting.amount_cents,
                    f"usage:{s.subscription_id}:{_iso(s.period_start)}:{s.revision}:"
                    f"{posting.wallet_id}",
                    granted_credits=posting.granted_credits, subscription_id=s.subscription_id,
                    period_start=s.period_start, snapshot_id=s.snapshot_id,
                    note=f"usage of {s.external_subscription_id}: {s.deducted_cents} -> "
                         f"{s.deducted_cents + moved} cents",
                ))
            positions.append((s.subscription_id, s.period_start, s.customer_id,
                              s.deducted_cents + moved, s.revision + 1, s.snapshot_id))
            customers_done.add(s.customer_id)
        result.transactions = post(conn, rows, as_of, run_id)
        _checkpoint(conn, "deduct:posted")
        if positions:
            conn.execute(_POSITIONS, {
                "subs": [p[0] for p in positions], "starts": [p[1] for p in positions],
                "customers": [p[2] for p in positions], "deducted": [p[3] for p in positions],
                "revisions": [p[4] for p in positions], "snapshots": [p[5] for p in positions],
            })
        failpoint("wallets.before_batch_commit")
        result.customers = len(customers_done)
        result.wallets = sorted({row.wallet_id for row in rows})
        result.negative = [
            Negative(w, meta[w].code, meta[w].external_customer_id,
                     credits_text(funds[w].credits_balance), cents_value(overflow.get(w, ZERO)))
            for w in result.wallets
            if funds[w].balance_cents < 0 or funds[w].credits_balance < 0
        ]
        result.top.sort(key=lambda item: (-Decimal(str(item["amount_cents"])), item["customer"]))
        result.top = result.top[:10]
    failpoint("wallets.mid_batch")
    return result


def _refund_rest(allocation: Allocation, usable: Sequence[WalletFunds]) -> Allocation:
    """A refund the deducting wallets cannot take (they were terminated) goes to the first
    active wallet, so a usage decrease is never lost."""
    rest = allocation.uncovered_cents
    if rest <= 0 or not usable:
        return allocation
    first = sorted(usable, key=lambda w: w.order)[0]
    credits = credits_for(rest, first.rate_amount, first.currency)
    allocation.postings.append(Posting(first.wallet_id, "inbound", rest, credits))
    allocation.uncovered_cents = ZERO
    return allocation


def _record(
    result: DeductionBatch, allocation: Allocation, funds: dict[int, WalletFunds],
    meta: dict[int, _Meta], scope: Any, overflow: dict[int, Decimal],
) -> Decimal:
    """Apply postings to the in-memory funds (next scopes of the customer see them) and add
    them to the batch totals; returns the net cents deducted."""
    moved = ZERO
    for posting in allocation.postings:
        funds[posting.wallet_id] = apply_posting(funds[posting.wallet_id], posting)
        if posting.direction == "outbound":
            moved += posting.amount_cents
            result.credits_deducted += posting.credits
            result.amount_cents_deducted += posting.amount_cents
        else:
            moved -= posting.amount_cents
            result.corrections += 1
            result.credits_corrected += posting.credits
            result.amount_cents_corrected += posting.amount_cents
    if allocation.overflow_cents:
        last = allocation.postings[-1].wallet_id
        overflow[last] = overflow.get(last, ZERO) + allocation.overflow_cents
    result.uncovered_cents += allocation.uncovered_cents
    result.top.append({
        "customer": meta[allocation.postings[0].wallet_id].external_customer_id,
        "subscription": scope.external_subscription_id,
        "amount_cents": cents_value(moved),
        "usage_cents": cents_value(round_minor(scope.amount_cents)),
    })
    return moved


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------


@dataclass
class AlertSummary:
    """Alerts opened (new crossings) and resolved by one evaluation."""

    opened: int = 0
    resolved: int = 0


def evaluate_alerts(engine: Engine, as_of: datetime, run_id: int | None = None) -> AlertSummary:
    """Open an alert when a wallet's balance crosses into an alert rule, once per crossing.

    Rules: every row of ``wallet_alert_rules`` (a wallet's own, or all wallets' when
    ``wallet_id`` is null) plus the built-in "balance depleted" (credits <= 0). An alert stays
    open while the condition holds and is resolved when it stops; the next crossing is a new
    alert. ``alert_key`` (rule, wallet, crossing) is unique, so concurrent runs add it once.
    """
    summary = AlertSummary()
    with engine.begin() as conn:
        rules = conn.execute(
            text("select id, wallet_id, kind, threshold_credits from wallet_alert_rules"
                 " order by id")
        ).all()
        open_alerts = {
            (r.rule_key, int(r.wallet_id)): int(r.id)
            for r in conn.execute(text(
                "select id, rule_key, wallet_id from wallet_alerts where resolved_at is null"))
        }
        last = {
            (r.rule_key, int(r.wallet_id)): int(r.crossing)
            for r in conn.execute(text(
                "select rule_key, wallet_id, max(crossing) as crossing from wallet_alerts"
                " group by rule_key, wallet_id"))
        }
        new_rows: list[dict[str, Any]] = []
        resolve: list[int] = []
        for w in conn.execute(
            text(
                """
                select b.wallet_id, b.customer_id, b.credits_balance from wallet_balances b
                join wallets w on w.id = b.wallet_id where w.status = 'active'
                order by b.wallet_id
                """
            )
        ):
            applicable = [("depleted", None, ALERT_DEPLETED, None)] + [
                (f"rule-{r.id}", r.id, r.kind, r.threshold_credits)
                for r in rules
                if (r.wallet_id is None or r.wallet_id == w.wallet_id)
                and r.kind == ALERT_BELOW
            ]
            for rule_key, rule_id, kind, threshold in applicable:
                key = (rule_key, int(w.wallet_id))
                change = alert_change(
                    alert_condition(kind, threshold, w.credits_balance),
                    key in open_alerts, last.get(key, 0),
                )
                if change.open_crossing is not None:
                    new_rows.append({
                        "wallet_id": w.wallet_id, "customer_id": w.customer_id,
                        "rule_id": rule_id, "rule_key": rule_key, "kind": kind,
                        "threshold": threshold, "credits": w.credits_balance,
                        "crossing": change.open_crossing,
                        "alert_key": f"{rule_key}:{w.wallet_id}:{change.open_crossing}",
                        "as_of": as_of, "run_id": run_id,
                    })
                elif change.resolve:
                    resolve.append(open_alerts[key])
        if new_rows:
            summary.opened = _insert_alerts_bulk(conn, new_rows)
        if resolve:
            summary.resolved = conn.execute(
                text("update wallet_alerts set resolved_at = :as_of"
                     " where id = any(cast(:ids as bigint[])) and resolved_at is null"),
                {"as_of": as_of, "ids": resolve},
            ).rowcount
        failpoint("wallets.before_alerts_commit")
    return summary


def _insert_alerts_bulk(conn: Connection, rows: list[dict[str, Any]]) -> int:
    columns = ("wallet_id", "customer_id", "rule_id", "rule_key", "kind", "threshold",
               "credits", "crossing", "alert_key", "run_id")
    result = conn.execute(
        text(
            """
            insert into wallet_alerts (wallet_id, customer_id, rule_id, rule_key, kind,
              threshold_credits, credits_balance, crossing, alert_key, run_id, as_of)
            select *, cast(:as_of as timestamptz) from unnest(
              cast(:wallet_id as bigint[]), cast(:customer_id as bigint[]),
              cast(:rule_id as bigint[]), cast(:rule_key as text[]), cast(:kind as text[]),
              cast(:threshold as numeric[]), cast(:credits as numeric[]),
              cast(:crossing as integer[]), cast(:alert_key as text[]),
              cast(:run_id as bigint[]))
            on conflict (alert_key) do nothing
            """
        ),
        {**{c: [r[c] for r in rows] for c in columns}, "as_of": rows[0]["as_of"]},
    )
    return int(result.rowcount)


@dataclass
class PendingAlerts:
    """Alerts not announced yet: the first ``limit`` in full, the rest as counts."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    up_to_id: int = 0


def pending_alert_events(engine: Engine, limit: int = MAX_ALERT_EVENTS) -> PendingAlerts:
    """Alerts whose Prefect event has not been emitted yet (emitted after they commit)."""
    with engine.connect() as conn:
        counts = conn.execute(text(
            "select kind, count(*) as n, max(id) as up_to from wallet_alerts"
            " where emitted_at is null group by kind"
        )).all()
        if not counts:
            return PendingAlerts()
        up_to = max(int(c.up_to) for c in counts)
        alerts = [
            dict(r._mapping)
            for r in conn.execute(text(
                """
                select a.id, a.wallet_id, w.code as wallet_code, c.external_id
                  as external_customer_id, a.kind, a.threshold_credits, a.credits_balance,
                  a.crossing, a.as_of
                from wallet_alerts a join wallets w on w.id = a.wallet_id
                join customers c on c.id = a.customer_id
                where a.emitted_at is null and a.id <= :up_to order by a.id limit :n
                """
            ), {"up_to": up_to, "n": limit})
        ]
    return PendingAlerts(
        alerts, sum(int(c.n) for c in counts), {c.kind: int(c.n) for c in counts}, up_to
    )


def mark_alerts_emitted(engine: Engine, up_to_id: int) -> None:
    """Mark every pending alert up to ``up_to_id`` as announced."""
    with engine.begin() as conn:
        conn.execute(
            text("update wallet_alerts set emitted_at = now()"
                 " where emitted_at is null and id <= :up_to"),
            {"up_to": up_to_id},
        )


def alert_event(alert: dict[str, Any]) -> dict[str, Any]:
    """The Prefect event for an alert: name, resource and payload (see ``emit_event``)."""
    low = alert["kind"] == ALERT_BELOW
    return {
        "event": "tallyflow.wallet.balance-low" if low else "tallyflow.wallet.balance-depleted",
        "resource": {
            "prefect.resource.id": f"tallyflow.wallet.{alert['wallet_id']}",
            "prefect.resource.name": alert["wallet_code"],
            "tallyflow.customer": alert["external_customer_id"],
        },
        "payload": {
            "kind": alert["kind"],
            "crossing": alert["crossing"],
            "credits_balance": credits_text(alert["credits_balance"]),
            "threshold_credits": (
                None if alert["threshold_credits"] is None
                else credits_text(alert["threshold_credits"])
            ),
            "as_of": alert["as_of"].isoformat(),
        },
    }


def alerts_summary_event(pending: PendingAlerts, run_id: int) -> dict[str, Any]:
    """One event for all of a run's alerts beyond its single-event budget (counts per kind)."""
    return {
        "event": "tallyflow.wallet.balance-alerts",
        "resource": {"prefect.resource.id": f"tallyflow.wallet-run.{run_id}"},
        "payload": {
            "alerts": pending.total,
            "announced_one_by_one": len(pending.alerts),
            "by_kind": pending.by_kind,
        },
    }


def add_alert_rule(
    engine: Engine, kind: str, threshold_credits: Decimal | None = None,
    external_customer_id: str | None = None, wallet_code: str | None = None,
) -> int:
    """Configure an alert (all wallets, or one customer's wallet); returns the rule id."""
    if kind == ALERT_BELOW and threshold_credits is None:
        raise WalletError("balance_below needs a threshold in credits")
    with engine.begin() as conn:
        wallet_id = None
        if external_customer_id is not None:
            wallet_id = _pick_wallet(conn, _customer_id(conn, external_customer_id),
                                     wallet_code)
        return int(conn.execute(
            text("insert into wallet_alert_rules (wallet_id, kind, threshold_credits)"
                 " values (:w, :k, :t) returning id"),
            {"w": wallet_id, "k": kind, "t": threshold_credits},
        ).scalar_one())


# --------------------------------------------------------------------------------------------
# Manual top-ups and payments
# --------------------------------------------------------------------------------------------


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
        return int(conn.execute(
            text(
                """
                with settled as (
                  update wallet_transactions set status = 'settled', settled_at = now()
                  where customer_id = :c and status = 'pending' and direction = 'inbound'
                    and (cast(:w as bigint) is null or wallet_id = cast(:w as bigint))
                    and (cast(:t as bigint) is null or id = cast(:t as bigint))
                  returning id, wallet_id, credits, granted_credits, amount_cents
                ), invoiced as (
                  -- their credit invoices are paid now too (tasks/credit_invoices.py)
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
            ),
            {"c": customer_id, "w": wallet_id, "t": transaction_id},
        ).scalar_one())


# --------------------------------------------------------------------------------------------
# Reading: ``tallyflow wallets show``
# --------------------------------------------------------------------------------------------


def wallet_overview(
    engine: Engine, external_customer_id: str, as_of: datetime | None = None, limit: int = 10,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> dict[str, Any]:
    """Balances (credits and money), ongoing usage and the last transactions of a customer,
    with Lago's wallet field names.

    ``credits_ongoing_balance`` = balance minus the usage the next run would still deduct
    (computed with the same allocation), so it is exact between hourly runs too. Usage is
    live (every event ingested so far, as ``tallyflow usage`` shows it), not the last
    snapshot's: the figures do not wait for the next hourly run.
    """
    moment = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        customer_id = _customer_id(conn, external_customer_id)
        stored = conn.execute(
            _SCOPE, {"ids": [customer_id], "as_of": moment, "since": _since(moment,
                                                                           grace_hours)}
        ).all()
    scopes = live_scopes(engine, customer_id, moment, stored)
    with engine.connect() as conn:
        wallets = conn.execute(
            text(
                """
                select w.id, w.code, w.name, w.currency, w.rate_amount, w.priority, w.status,
                  w.expiration_at, w.created_at, w.paid_credits, w.granted_credits,
                  b.wallet_id is not null as opened,
                  coalesce(b.credits_balance, 0) as credits_balance,
                  coalesce(b.granted_credits_balance, 0) as granted_credits_balance,
                  coalesce(b.balance_cents, 0) as balance_cents,
                  coalesce(b.pending_credits, 0) as pending_credits,
                  coalesce(b.consumed_credits, 0) as consumed_credits,
                  coalesce(b.consumed_amount_cents, 0) as consumed_amount_cents,
                  b.terminated_at
                from wallets w left join wallet_balances b on b.wallet_id = w.id
                where w.customer_id = :c order by w.priority, w.created_at, w.id
                """
            ),
            {"c": customer_id},
        ).all()
        per_wallet_current: dict[int, Decimal] = defaultdict(lambda: ZERO)
        if scopes:
            for r in conn.execute(USAGE_DEDUCTED, {
                "subs": [s.subscription_id for s in scopes],
                "starts": [s.period_start for s in scopes],
            }):
                per_wallet_current[int(r.wallet_id)] += Decimal(r.amount_cents)
        transactions = conn.execute(
            text(
                """
                select t.id, t.wallet_id, w.code, t.direction, t.status, t.source, t.credits,
                  t.granted_credits, t.amount_cents, s.external_id as subscription,
                  t.period_start, t.as_of, t.created_at, t.settled_at, t.idempotency_key
                from wallet_transactions t join wallets w on w.id = t.wallet_id
                left join subscriptions s on s.id = t.subscription_id
                where t.customer_id = :c order by t.id desc limit :n
                """
            ),
            {"c": customer_id, "n": limit},
        ).all()
    funds = {
        w.id: WalletFunds(w.id, w.priority, w.created_at, w.rate_amount, w.currency,
                          w.credits_balance, w.granted_credits_balance, w.balance_cents)
        for w in wallets if w.status == "active" and w.opened
    }
    currency_of = {w.id: w.currency for w in wallets}
    pending_by_wallet: dict[int, Decimal] = defaultdict(lambda: ZERO)
    pending_credits_by_wallet: dict[int, Decimal] = defaultdict(lambda: ZERO)
    usage_total = ZERO
    deducted_total = ZERO
    for s in scopes:
        target = round_minor(s.amount_cents)
        usage_total += target
        deducted_total += s.deducted_cents
        delta = target - s.deducted_cents
        if delta <= 0:
            continue
        usable = [f for f in funds.values() if currency_of[f.wallet_id] == s.currency]
        for posting in allocate_usage(delta, usable).postings:
            funds[posting.wallet_id] = apply_posting(funds[posting.wallet_id], posting)
            pending_by_wallet[posting.wallet_id] += posting.amount_cents
            pending_credits_by_wallet[posting.wallet_id] += posting.credits
    out_wallets = []
    for w in wallets:
        ongoing_credits = w.credits_balance - pending_credits_by_wallet[w.id]
        ongoing_cents = w.balance_cents - pending_by_wallet[w.id]
        usage_cents = per_wallet_current[w.id] + pending_by_wallet[w.id]
        out_wallets.append({
            "lago_id": str(w.id),
            "code": w.code,
            "name": w.name,
            "external_customer_id": external_customer_id,
            "status": w.status,
            "currency": w.currency,
            "rate_amount": format(w.rate_amount, "f"),
            "priority": w.priority,
            "credits_balance": credits_text(w.credits_balance),
            "balance_cents": cents_value(w.balance_cents),
            "credits_ongoing_balance": credits_text(ongoing_credits),
            "ongoing_balance_cents": cents_value(ongoing_cents),
            "credits_ongoing_usage_balance": credits_text(
                credits_for(usage_cents, w.rate_amount, w.currency)
            ),
            "ongoing_usage_balance_cents": cents_value(usage_cents),
            "consumed_credits": credits_text(w.consumed_credits),
            "consumed_amount_cents": cents_value(w.consumed_amount_cents),
            "pending_credits": credits_text(w.pending_credits),
            "granted_credits_balance": credits_text(w.granted_credits_balance),
            "paid_top_up_credits": credits_text(w.paid_credits),
            "granted_top_up_credits": credits_text(w.granted_credits),
            "expiration_at": w.expiration_at.isoformat() if w.expiration_at else None,
            "terminated_at": w.terminated_at.isoformat() if w.terminated_at else None,
            "created_at": w.created_at.isoformat(),
        })
    return {
        "external_customer_id": external_customer_id,
        "as_of": moment.isoformat(),
        "wallets": out_wallets,
        "ongoing_usage": {
            "amount_cents": cents_value(usage_total),
            "deducted_cents": cents_value(deducted_total),
            "undeducted_cents": cents_value(usage_total - deducted_total),
            "subscriptions": [
                {"external_subscription_id": s.external_subscription_id,
                 "period_start": s.period_start.isoformat(),
                 "amount_cents": cents_value(round_minor(s.amount_cents)),
                 "deducted_cents": cents_value(s.deducted_cents), "currency": s.currency}
                for s in scopes
            ],
        },
        "wallet_transactions": [
            {
                "lago_id": str(t.id),
                "lago_wallet_id": str(t.wallet_id),
                "wallet_code": t.code,
                "transaction_type": t.direction,
                "status": t.status,
                "transaction_status": _transaction_status(t.source, t.status, t.credits,
                                                          t.granted_credits),
                "source": t.source,
                "credit_amount": credits_text(t.credits),
                "amount_cents": cents_value(t.amount_cents),
                "granted_credits": credits_text(t.granted_credits),
                "external_subscription_id": t.subscription,
                "period_start": t.period_start.isoformat() if t.period_start else None,
                "as_of": t.as_of.isoformat(),
                "created_at": t.created_at.isoformat(),
                "settled_at": t.settled_at.isoformat() if t.settled_at else None,
                "idempotency_key": t.idempotency_key,
            }
            for t in transactions
        ],
    }


@dataclass(frozen=True)
class LiveScope:
    """One (subscription, period) in a customer's scope with its live usage."""

    subscription_id: int
    period_start: datetime
    currency: str
    amount_cents: Decimal
    external_subscription_id: str
    customer_id: int
    deducted_cents: Decimal
    revision: int


def live_scopes(
    engine: Engine, customer_id: int, moment: datetime, stored: Sequence[Any]
) -> list[LiveScope]:
    """The periods in scope (``stored``: those with a snapshot; plus the current period of every
    subscription active at ``moment``, snapshot or not) with usage rated live from the folded
    state and the events not folded yet, exactly as ``tallyflow usage`` rates it."""
    from tasks.rating import load_subscriptions
    from tasks.usage import current_usage

    with engine.connect() as conn:
        external_ids = list(conn.execute(
            text("select external_id from subscriptions where customer_id = :c order by id"),
            {"c": customer_id},
        ).scalars())
        subs = {s.id: s for s in load_subscriptions(conn, external_ids).values()}
        positions = {
            (int(r.subscription_id), r.period_start): (Decimal(r.deducted_cents), int(r.revision))
            for r in conn.execute(
                text("select subscription_id, period_start, deducted_cents, revision"
                     " from wallet_usage_positions where customer_id = :c"),
                {"c": customer_id},
            )
        }
    wanted: dict[tuple[int, datetime], datetime] = {
        (int(s.subscription_id), s.period_start): s.period_start for s in stored
    }
    for sub in subs.values():
        if sub.subscription_at <= moment and (sub.terminated_at is None
                                              or sub.terminated_at >= moment):
            wanted.setdefault((sub.id, sub.period_at(moment).period_start), moment)
    out: list[LiveScope] = []
    for (sub_id, period_start), at in sorted(wanted.items()):
        sub = subs[sub_id]
        try:
            usage = current_usage(engine, sub.external_id, at)
        except (LookupError, ValueError):
            continue
        deducted, revision = positions.get((sub_id, period_start), (ZERO, 0))
        out.append(LiveScope(sub_id, period_start, sub.currency, Decimal(usage["amount_cents"]),
                             sub.external_id, customer_id, deducted, revision))
    return out


def open_catalog_wallets(engine: Engine, as_of: datetime | None = None) -> int:
    """Open the wallets a catalog apply created, at once: their granted credits settle now
    (as Lago does at creation), purchased ones stay pending until paid (unless
    TALLYFLOW_WALLETS_SETTLE_PAID). Idempotent: the initial top-up is posted once per wallet."""
    return open_wallets(engine, as_of or datetime.now(UTC), settle_paid_default())


def _transaction_status(source: str, status: str, credits: Decimal, granted: Decimal) -> str:
    """Lago's ``transaction_status``: purchased, granted, voided or invoiced (consumed)."""
    if source == "expiration" or status == "voided":
        return "voided"
    if source == "usage":
        return "invoiced"
    return "granted" if granted == credits and credits > 0 else "purchased"


def recent_runs(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The last runs of the wallet flow (run history)."""
    with engine.connect() as conn:
        return [
            {k: (format(v, "f") if isinstance(v, Decimal) else v)
             for k, v in r._mapping.items()}
            for r in conn.execute(text(
                "select id, flow_run_id, as_of, status, customers, wallets_touched, transactions,"
                " credits_deducted, amount_cents_deducted, corrections, top_ups, expired,"
                " alerts, negative_wallets, uncovered_cents, started_at, finished_at, error"
                " from wallet_runs order by id desc limit :n"), {"n": limit})
        ]


# --------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers, retried only on transient failures
# --------------------------------------------------------------------------------------------

_RETRIES = transient_retries(retries=4, backoff_factor=0.5)


@task(name="wallet-run-start", **_RETRIES)
def start_run_task(as_of: datetime, flow_run_id: str | None) -> int:
    return start_run(billing_engine(), as_of, flow_run_id)


@task(name="wallet-run-finish", **_RETRIES)
def finish_run_task(
    run_id: int, summary: dict[str, Any], status: str = "completed", error: str | None = None
) -> None:
    finish_run(billing_engine(), run_id, summary, status, error)


@task(name="open-wallets", **_RETRIES)
def open_wallets_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return open_wallets(billing_engine(), as_of, settle_paid, run_id)


@task(name="expire-wallets", **_RETRIES)
def expire_wallets_task(as_of: datetime, run_id: int) -> list[int]:
    return expire_wallets(billing_engine(), as_of, run_id)


@task(name="interval-top-ups", **_RETRIES)
def interval_top_ups_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return interval_top_ups(billing_engine(), as_of, settle_paid, run_id)


@task(name="due-customers", **_RETRIES)
def due_customers_task(
    as_of: datetime, only: list[str] | None, grace_hours: int = DEFAULT_GRACE_HOURS
) -> list[int]:
    return due_customers(billing_engine(), as_of, only, grace_hours)


@task(name="deduct-usage", task_run_name="deduct-usage-{first_id}", **_RETRIES)
def deduct_task(
    customer_ids: list[int], as_of: datetime, run_id: int, first_id: int,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> DeductionBatch:
    """One batch of customers in one transaction (``first_id`` only names the task run)."""
    return deduct_customers(billing_engine(), customer_ids, as_of, run_id, grace_hours)


@task(name="threshold-top-ups", **_RETRIES)
def threshold_top_ups_task(as_of: datetime, settle_paid: bool, run_id: int) -> int:
    return threshold_top_ups(billing_engine(), as_of, settle_paid, run_id)


@task(name="evaluate-alerts", **_RETRIES)
def evaluate_alerts_task(as_of: datetime, run_id: int) -> AlertSummary:
    return evaluate_alerts(billing_engine(), as_of, run_id)


@task(name="pending-alert-events", **_RETRIES)
def pending_alert_events_task(limit: int = MAX_ALERT_EVENTS) -> PendingAlerts:
    return pending_alert_events(billing_engine(), limit)


@task(name="mark-alerts-emitted", **_RETRIES)
def mark_alerts_emitted_task(up_to_id: int) -> None:
    mark_alerts_emitted(billing_engine(), up_to_id)


def batch_dict(batch: DeductionBatch) -> dict[str, Any]:
    """A batch as plain JSON-able values (for summaries and artifacts)."""
    out = asdict(batch)
    for key, value in out.items():
        if isinstance(value, Decimal):
            out[key] = format(value, "f")
    return out


def chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
