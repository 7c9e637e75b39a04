"""A balance a gateway can ask on every request (docs/architecture.md §19).

Why a running figure: ``wallet_overview`` rates the period on every read (exact, but tens of
milliseconds per subscription). Here an asynchronous refresh rates only the subscriptions with
events newer than its watermark and stores each one's in-arrears usage in ``running_usage``;
a read is then one query over a few indexed rows. The ingest's merge is untouched (no trigger,
no extra write), so it is not slowed at all.

Event ids are assigned before their transaction commits, so an event with an id below the
watermark can appear later: each pass rescans ``OVERLAP_IDS`` ids below the watermark. Rating
is a pure function of the events committed so far, so a pass run twice, or an overlapping
rescan, writes the same figures (idempotent). A void adds no event: each pass also re-rates
the subscriptions with a void recorded since the previous pass (``VOID_MARGIN`` before it).

One derivation (§21): ``wallet_overview`` (the wallet endpoints' ``ongoing_balance_cents``,
``tallyflow wallets show``) and the wallet alerts read these same figures (``running_scopes``,
``last_pass``); the watermark row's ``refreshed_at`` is the moment the last pass rated at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.models.lago.results import CustomerBalance
from tallyflow.models.wallets import cents_value
from tallyflow.tasks.wallets.ledger import WalletError

# How many ids below the watermark each pass rescans (ids assigned by transactions that had not
# committed at the last pass): ~10 s of ingest at 2,000 events/s.
OVERLAP_IDS = 20_000

# A void transaction that started before the previous pass and committed after it is still
# seen (``event_voids.created_at`` is its transaction's start).
VOID_MARGIN = timedelta(minutes=10)

_WATERMARK = text(
    "select event_id, refreshed_at from running_usage_watermark where id = 1")
_VOIDED = text(
    "select distinct external_subscription_id as ext from event_voids where created_at > :since")
_TOUCHED = text(
    """
    select external_subscription_id as ext, max(id) as top from events
    where id > :floor and voided_at is null group by external_subscription_id
    """
)
_ROLLED = text(
    "select external_subscription_id as ext from running_usage where period_end < :now")
_IN_FORCE = text(
    """
    select id, customer_id from subscriptions where external_id = :ext
      and subscription_at <= :now order by subscription_at desc, id desc limit 1
    """
)
_UPSERT = text(
    """
    insert into running_usage (external_subscription_id, subscription_id, customer_id,
      period_start, period_end, currency, amount_cents, event_watermark, refreshed_at)
    values (:ext, :sub, :customer, :start, :end, :currency, :amount, :top, now())
    on conflict (external_subscription_id) do update set
      subscription_id = excluded.subscription_id, customer_id = excluded.customer_id,
      period_start = excluded.period_start, period_end = excluded.period_end,
      currency = excluded.currency, amount_cents = excluded.amount_cents,
      event_watermark = greatest(running_usage.event_watermark, excluded.event_watermark),
      refreshed_at = now()
    """
)
_ENDED = text(
    "delete from running_usage where external_subscription_id = :ext and period_end < :now")
_SET_WATERMARK = text(
    """
    insert into running_usage_watermark (id, event_id, refreshed_at) values (1, :top, :at)
    on conflict (id) do update set
      event_id = greatest(running_usage_watermark.event_id, excluded.event_id),
      refreshed_at = greatest(running_usage_watermark.refreshed_at, excluded.refreshed_at)
    """
)


@dataclass(frozen=True)
class RefreshSummary:
    """What one pass did: subscriptions rated and the watermark it left."""

    rated: int
    watermark: int


def refresh_running_usage(
    engine: Engine, now: datetime | None = None, overlap: int = OVERLAP_IDS
) -> RefreshSummary:
    """One pass: rate the subscriptions with events past ``watermark - overlap``, those with a
    void since the last pass and those whose stored period has ended, store their in-arrears
    usage, advance the watermark and record the pass's moment."""
    moment = now or datetime.now(UTC)
    with engine.connect() as conn:
        mark = conn.execute(_WATERMARK).first()
        watermark = int(mark.event_id) if mark is not None else 0
        touched = {r.ext: int(r.top) for r in conn.execute(
            _TOUCHED, {"floor": max(watermark - overlap, 0)})}
        if mark is not None and mark.refreshed_at is not None:
            for row in conn.execute(_VOIDED, {"since": mark.refreshed_at - VOID_MARGIN}):
                touched.setdefault(row.ext, 0)
        for row in conn.execute(_ROLLED, {"now": moment}):
            touched.setdefault(row.ext, 0)
    rated = 0
    for ext, top in sorted(touched.items()):
        rated += _rate_one(engine, ext, top, moment)
    new_mark = max([watermark, *touched.values()])
    with engine.begin() as conn:
        conn.execute(_SET_WATERMARK, {"top": new_mark, "at": moment})
    return RefreshSummary(rated, new_mark)


_RUNNING = text(
    """
    select u.external_subscription_id, u.subscription_id, u.customer_id, u.period_start,
      u.period_end, u.currency, u.amount_cents,
      coalesce(p.deducted_cents, 0) as deducted_cents, coalesce(p.revision, 0) as revision
    from running_usage u left join wallet_usage_positions p
      on p.subscription_id = u.subscription_id and p.period_start = u.period_start
    where cast(:ids as bigint[]) is null or u.customer_id = any(cast(:ids as bigint[]))
    order by u.customer_id, u.period_start, u.subscription_id
    """
)


def last_pass(conn: Connection) -> datetime | None:
    """The moment the last refresh pass rated at (None before the first pass)."""
    row = conn.execute(_WATERMARK).first()
    return None if row is None else row.refreshed_at


def running_scopes(conn: Connection, customer_ids: list[int] | None = None) -> list[Any]:
    """The running figures (all customers', or these customers'), each with what deductions
    already took for its (subscription, period): the rows the balance endpoint sums."""
    return list(conn.execute(_RUNNING, {"ids": customer_ids}).all())


def _rate_one(engine: Engine, ext: str, top: int, moment: datetime) -> int:
    """Rate one subscription's current period live and store it; 0 when it is not in force
    (unknown, not started or terminated): its row goes once its period has ended (the
    termination invoice bills the rest), so ended ones are not tried on every pass."""
    from tallyflow.tasks.usage import rated_usage

    try:
        usage = rated_usage(engine, ext, moment)
    except (LookupError, ValueError):
        with engine.begin() as conn:
            conn.execute(_ENDED, {"ext": ext, "now": moment})
        return 0
    in_arrears, _ = usage.in_arrears()
    with engine.begin() as conn:
        sub = conn.execute(_IN_FORCE, {"ext": ext, "now": moment}).first()
        if sub is None:
            return 0
        conn.execute(_UPSERT, {
            "ext": ext, "sub": sub.id, "customer": sub.customer_id,
            "start": usage.period.period_start, "end": usage.period.period_end,
            "currency": usage.currency, "amount": Decimal(in_arrears), "top": top,
        })
    return 1


_BALANCE = text(
    """
    select c.id,
      (select coalesce(sum(b.balance_cents), 0) from wallets w
         join wallet_balances b on b.wallet_id = w.id
       where w.customer_id = c.id and w.status = 'active') as balance_cents,
      (select coalesce(sum(greatest(u.amount_cents - coalesce(p.deducted_cents, 0), 0)), 0)
       from running_usage u left join wallet_usage_positions p
         on p.subscription_id = u.subscription_id and p.period_start = u.period_start
       where u.customer_id = c.id) as undeducted_cents,
      (select min(u.refreshed_at) from running_usage u where u.customer_id = c.id)
        as refreshed_at,
      (select w.currency from wallets w where w.customer_id = c.id and w.status = 'active'
       order by w.priority, w.created_at, w.id limit 1) as currency
    from customers c where c.external_id = :c
    """
)


def allowed(ongoing_balance_cents: Decimal, overdraft_cents: Decimal) -> bool:
    """Whether the ongoing balance covers the usage so far, with the overdraft allowed:
    ``ongoing + overdraft >= 0`` (at the boundary, exactly used up, still allowed)."""
    return ongoing_balance_cents + overdraft_cents >= 0


def customer_balance(conn: Connection, external_customer_id: str,
                     overdraft_cents: int) -> CustomerBalance:
    """The running balance of a customer: active wallets' money balance minus the usage the
    next deduction would still take (from ``running_usage``), and ``allowed``."""
    row = conn.execute(_BALANCE, {"c": external_customer_id}).first()
    if row is None:
        raise WalletError(f"unknown customer {external_customer_id!r}")
    balance = Decimal(row.balance_cents)
    undeducted = Decimal(row.undeducted_cents)
    ongoing = balance - undeducted
    overdraft = Decimal(overdraft_cents)
    return {
        "external_customer_id": external_customer_id,
        "currency": row.currency,
        "balance_cents": cents_value(balance),
        "ongoing_usage_cents": cents_value(undeducted),
        "ongoing_balance_cents": cents_value(ongoing),
        "overdraft_cents": overdraft_cents,
        "allowed": allowed(ongoing, overdraft),
        "refreshed_at": row.refreshed_at.isoformat() if row.refreshed_at else None,
    }
