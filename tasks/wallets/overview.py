"""What a person reads: a wallet's balance with live ongoing usage, and its transactions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.settings import get_settings
from tallyflow.models.lago.resources import LedgerTransaction, Wallet, WalletOverview
from tallyflow.models.rating.money import round_minor
from tallyflow.models.wallets import (
    ZERO,
    OngoingUsage,
    UsageScope,
    WalletFunds,
    cents_value,
    credits_for,
    credits_text,
    ongoing_usage,
    running_fresh,
)
from tallyflow.tasks.wallets.announce import transaction_status
from tallyflow.tasks.wallets.balance import last_pass, running_scopes
from tallyflow.tasks.wallets.deductions import _SCOPE
from tallyflow.tasks.wallets.ledger import DEFAULT_GRACE_HOURS, USAGE_DEDUCTED, _customer_id, _since


def wallet_overview(
    engine: Engine, external_customer_id: str, as_of: datetime | None = None, limit: int = 10,
    grace_hours: int = DEFAULT_GRACE_HOURS, max_age_seconds: float | None = None,
) -> WalletOverview:
    """Balances (credits and money), ongoing usage and the last transactions of a customer,
    with Lago's wallet field names.

    ``credits_ongoing_balance`` = balance minus the usage the next run would still deduct
    (computed with the same allocation, ``models.wallets.ongoing_usage``), so it is exact
    between hourly runs too. The current period's usage is the balance refresh's running
    figure (``running_usage``, every event counted by its last pass: the figure the balance
    endpoint and the wallet alerts read) when that pass is at most ``max_age_seconds`` old
    (``TALLYFLOW_BALANCE_MAX_AGE_SECONDS``); else, and for a subscription it holds no figure
    for, the period is rated live, as ``tallyflow usage`` does (docs/architecture.md §21).
    """
    moment = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        customer_id = _customer_id(conn, external_customer_id)
        stored = conn.execute(
            _SCOPE, {"ids": [customer_id], "as_of": moment, "since": _since(moment,
                                                                           grace_hours)}
        ).all()
    if max_age_seconds is None:
        max_age_seconds = get_settings().balance_max_age_seconds
    scopes, pass_at = live_scopes(engine, customer_id, moment, stored, max_age_seconds)
    with engine.connect() as conn:
        wallets = conn.execute(_WALLETS, {"c": customer_id}).all()
        deducted = _deducted_by_wallet(conn, scopes)
        transactions = conn.execute(_TRANSACTIONS, {"c": customer_id, "n": limit}).all()
    ongoing = ongoing_usage(
        [UsageScope((s.subscription_id, s.period_start), s.customer_id, s.currency,
                    s.amount_cents, s.deducted_cents) for s in scopes],
        {
            w.id: WalletFunds(w.id, w.priority, w.created_at, w.rate_amount, w.currency,
                              w.credits_balance, w.granted_credits_balance, w.balance_cents)
            for w in wallets if w.status == "active" and w.opened
        },
    )
    return {
        "external_customer_id": external_customer_id,
        "as_of": moment.isoformat(),
        "wallets": [_wallet_json(w, external_customer_id, ongoing, deducted) for w in wallets],
        "ongoing_usage": {
            "amount_cents": cents_value(ongoing.usage_cents),
            "deducted_cents": cents_value(ongoing.deducted_cents),
            "undeducted_cents": cents_value(ongoing.usage_cents - ongoing.deducted_cents),
            "refreshed_at": pass_at.isoformat() if pass_at is not None else None,
            "subscriptions": [
                {"external_subscription_id": s.external_subscription_id,
                 "period_start": s.period_start.isoformat(),
                 "amount_cents": cents_value(round_minor(s.amount_cents)),
                 "deducted_cents": cents_value(s.deducted_cents), "currency": s.currency,
                 "source": s.source}
                for s in scopes
            ],
        },
        "wallet_transactions": [_transaction_json(t) for t in transactions],
    }


_WALLETS = text(
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
)

_TRANSACTIONS = text(
    """
    select t.id, t.wallet_id, w.code, t.direction, t.status, t.source, t.credits,
      t.granted_credits, t.amount_cents, s.external_id as subscription,
      t.period_start, t.as_of, t.created_at, t.settled_at, t.idempotency_key
    from wallet_transactions t join wallets w on w.id = t.wallet_id
    left join subscriptions s on s.id = t.subscription_id
    where t.customer_id = :c order by t.id desc limit :n
    """
)


def _deducted_by_wallet(conn: Connection, scopes: Sequence[LiveScope]) -> dict[int, Decimal]:
    """What usage of the scopes' periods has taken from each wallet so far (net)."""
    out: dict[int, Decimal] = defaultdict(lambda: ZERO)
    if scopes:
        for r in conn.execute(USAGE_DEDUCTED, {
            "subs": [s.subscription_id for s in scopes],
            "starts": [s.period_start for s in scopes],
        }):
            out[int(r.wallet_id)] += Decimal(r.amount_cents)
    return out


def _wallet_json(
    w: Any, external_customer_id: str, ongoing: OngoingUsage, deducted: Mapping[int, Decimal]
) -> Wallet:
    """One wallet in Lago's shape, its ongoing figures net of what the next run would take."""
    pending_cents = ongoing.pending_cents.get(w.id, ZERO)
    usage_cents = deducted.get(w.id, ZERO) + pending_cents
    return {
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
        "credits_ongoing_balance": credits_text(
            w.credits_balance - ongoing.pending_credits.get(w.id, ZERO)
        ),
        "ongoing_balance_cents": cents_value(w.balance_cents - pending_cents),
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
    }


def _transaction_json(t: Any) -> LedgerTransaction:
    """One ledger row in Lago's wallet transaction shape."""
    return {
        "lago_id": str(t.id),
        "lago_wallet_id": str(t.wallet_id),
        "wallet_code": t.code,
        "transaction_type": t.direction,
        "status": t.status,
        "transaction_status": transaction_status(t.source, t.status, t.credits,
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
    source: str = "live"  # or "running_usage": the balance refresh's figure


def live_scopes(
    engine: Engine, customer_id: int, moment: datetime, stored: Sequence[Any],
    max_age_seconds: float = 0.0,
) -> tuple[list[LiveScope], datetime | None]:
    """The periods in scope (``stored``: those with a snapshot; plus the current period of every
    subscription active at ``moment``, snapshot or not) with their usage, and the moment of the
    balance refresh's last pass. A period the running figures hold (same row, same period) is
    read from them when that pass is fresh (``running_fresh``); any other is rated live from
    the folded state and the events not folded yet, exactly as ``tallyflow usage`` rates it."""
    from tallyflow.tasks.folding import load_subscription_rows

    with engine.connect() as conn:
        pass_at = last_pass(conn)
        running = {
            (int(r.subscription_id), r.period_start): Decimal(r.amount_cents)
            for r in running_scopes(conn, [customer_id])
        } if running_fresh(pass_at, moment, max_age_seconds) else {}
        external_ids = list(conn.execute(
            text("select external_id from subscriptions where customer_id = :c order by id"),
            {"c": customer_id},
        ).scalars())
        subs = {s.id: s for s in load_subscription_rows(conn, external_ids)}
        positions = {
            (int(r.subscription_id), r.period_start): (Decimal(r.deducted_cents), int(r.revision))
            for r in conn.execute(
                text("select subscription_id, period_start, deducted_cents, revision"
                     " from wallet_usage_positions where customer_id = :c"),
                {"c": customer_id},
            )
        }
    # a moment inside each scope's row's life (a plan change's row starts mid-period)
    wanted: dict[tuple[int, datetime], datetime] = {
        (int(s.subscription_id), s.period_start): (
            max(s.period_start, subs[int(s.subscription_id)].subscription_at)
            if int(s.subscription_id) in subs else s.period_start)
        for s in stored
    }
    for sub in subs.values():
        if sub.subscription_at <= moment and (sub.terminated_at is None
                                              or sub.terminated_at >= moment):
            wanted.setdefault((sub.id, sub.period_at(moment).period_start), moment)
    out: list[LiveScope] = []
    for (sub_id, period_start), at in sorted(wanted.items()):
        sub = subs[sub_id]
        amount = running.get((sub_id, period_start))
        if amount is None:
            amount = _rated_live(engine, sub.external_id, at)
            if amount is None:
                continue
        deducted, revision = positions.get((sub_id, period_start), (ZERO, 0))
        out.append(LiveScope(sub_id, period_start, sub.currency, amount, sub.external_id,
                             customer_id, deducted, revision,
                             "live" if (sub_id, period_start) not in running
                             else "running_usage"))
    return out, pass_at


def _rated_live(engine: Engine, external_id: str, at: datetime) -> Decimal | None:
    """What the hourly deductions would take for the period at ``at``, rated now: charges
    paid in advance are paid per event (tasks/invoicing/advance/charges.py), so not owed
    again. None when the subscription is not rated there (unknown, not in force)."""
    from tallyflow.tasks.usage import rated_usage

    try:
        in_arrears, _ = rated_usage(engine, external_id, at).in_arrears()
    except (LookupError, ValueError):
        return None
    return Decimal(in_arrears)


# lago_invoice_id: the credit invoice of a paid top-up (tasks/invoicing/credit.py), once issued
_TRANSACTION_COLUMNS = """
    select t.id, t.wallet_id, t.direction, t.status, t.source, t.credits, t.granted_credits,
           t.amount_cents, t.created_at, t.settled_at, w.currency, w.priority,
           (select i.lago_id from invoice_fees f join invoices i on i.id = f.invoice_id
            where f.wallet_transaction_id = t.id limit 1) as lago_invoice_id
    from wallet_transactions t join wallets w on w.id = t.wallet_id
"""


def wallet_row(engine: Engine, wallet_id: int) -> dict[str, object] | None:
    """A wallet's id, code, customer_id, status and its customer's ``external_id``."""
    with engine.connect() as conn:
        row = conn.execute(
            text("select w.id, w.code, w.customer_id, w.status, c.external_id from wallets w"
                 " join customers c on c.id = w.customer_id where w.id = :w"),
            {"w": wallet_id},
        ).first()
    return None if row is None else dict(row._mapping)


def customer_wallet_id(engine: Engine, external_customer_id: str, code: str) -> int | None:
    """The id of the customer's wallet with this code."""
    with engine.connect() as conn:
        found = conn.execute(
            text("select w.id from wallets w join customers c on c.id = w.customer_id"
                 " where c.external_id = :c and w.code = :w"),
            {"c": external_customer_id, "w": code},
        ).scalar()
    return None if found is None else int(found)


# transaction_status in SQL (Lago's list filter of that name)
_TRANSACTION_STATUS_SQL = (
    "(case when t.source = 'expiration' or t.status = 'voided' then 'voided'"
    " when t.source = 'usage' then 'invoiced'"
    " when t.granted_credits = t.credits and t.credits > 0 then 'granted' else 'purchased' end)")
_TRANSACTION_COUNT = "select count(*) from wallet_transactions t"
# Lago's list filters (wallet_transactions_controller.rb) -> their SQL
TRANSACTION_FILTERS = {"status": "t.status", "transaction_type": "t.direction",
                       "transaction_status": _TRANSACTION_STATUS_SQL}


def transactions_page(engine: Engine, wallet_id: int, page: int, per_page: int,
                      filters: dict[str, str] | None = None) -> tuple[list[Any], int]:
    """One page of a wallet's transactions, newest first, with their wallet's currency and
    priority, and how many it has in all (the page is read in SQL). ``filters``: names of
    TRANSACTION_FILTERS and the value each must have."""
    given = filters or {}
    condition = "".join(f" and {TRANSACTION_FILTERS[name]} = :{name}" for name in given)
    params = {**given, "w": wallet_id}
    with engine.connect() as conn:
        total = int(conn.execute(
            text(_TRANSACTION_COUNT + " where t.wallet_id = :w" + condition),
            params).scalar_one())
        rows = conn.execute(
            text(_TRANSACTION_COLUMNS + " where t.wallet_id = :w" + condition
                 + " order by t.id desc limit :limit offset :offset"),
            {**params, "limit": per_page, "offset": (page - 1) * per_page}).all()
    return list(rows), total


def top_up_transactions(engine: Engine, idempotency_key: str) -> list[Any]:
    """The transactions one top-up posted (its granted and its paid part), in id order."""
    with engine.connect() as conn:
        return list(conn.execute(
            text(_TRANSACTION_COLUMNS + " where t.idempotency_key in (:granted, :paid)"
                 " order by t.id"),
            {"granted": f"{idempotency_key}:granted", "paid": f"{idempotency_key}:paid"},
        ).all())
