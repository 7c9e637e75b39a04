"""Usage deductions: which customers are due, and posting each (subscription, period)'s delta.

The allocation across wallets is pure (``tallyflow.models.wallets``); this module reads the
inputs under the customers' row locks and posts the result (docs/architecture.md §3,
invariant 4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.lago.summaries import ContainedFailure, DeductionBatchFigures, TopDeduction
from tallyflow.models.lago.times import iso_key
from tallyflow.models.rating.money import round_minor
from tallyflow.models.wallets import (
    ZERO,
    Allocation,
    DeductionPlan,
    UsageScope,
    WalletFunds,
    cents_value,
    credits_text,
    plan_deductions,
)
from tallyflow.tasks.runs import contain, failure, names_of
from tallyflow.tasks.usage import change_set_members
from tallyflow.tasks.wallets.ledger import (
    DEFAULT_GRACE_HOURS,
    USAGE_DEDUCTED,
    LedgerRow,
    _since,
    lock_customers,
    post,
)

_DUE_SQL = """
    select distinct s.customer_id
    from {source}
    join subscriptions s on s.id = a.subscription_id
    left join wallet_usage_positions p
      on p.subscription_id = a.subscription_id and p.period_start = a.period_start
    where a.period_start <= :as_of and a.period_end >= :since
      and a.amount_cents <> coalesce(p.deducted_cents, 0)
      and not exists (select 1 from invoice_subscriptions i
                      join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
                      where i.subscription_id = a.subscription_id
                        and i.period_start = a.period_start)
      and exists (select 1 from wallets w join wallet_balances b on b.wallet_id = w.id
                  where w.customer_id = s.customer_id and w.status = 'active')
      and (cast(:only as text[]) is null or s.customer_id in (
             select c.id from customers c where c.external_id = any(cast(:only as text[]))))
      and (cast(:skip as text[]) is null or s.customer_id not in (
             select c.id from customers c where c.external_id = any(cast(:skip as text[]))))
    order by 1
    """
_DUE = text(_DUE_SQL.format(source="usage_amounts a"))
# Only the hour's change set (docs/architecture.md §24): its members' amounts, by primary key.
_DUE_CHANGED = text(_DUE_SQL.format(
    source="unnest(cast(:members as bigint[])) m(id)"
           " join usage_amounts a on a.subscription_id = m.id"))


def due_customers(
    engine: Engine, as_of: datetime, only: Sequence[str] | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS, skip: Sequence[str] | None = None,
    change_set: datetime | None = None,
) -> list[int]:
    """Customers whose usage in scope differs from what their wallets have deducted.

    ``skip`` (external ids) are left out: customers whose usage snapshot failed this hour,
    so that what they owe is not deducted from a stale snapshot (tasks/runs/containment.py).

    In scope: the billing periods containing ``as_of``, and those that ended less than
    ``grace_hours`` before it (late events of a just-closed period still count). One join of
    ``usage_amounts`` with the positions: cost follows subscriptions, not ledger history.

    ``change_set`` (an hour whose set was taken): only the customers of its members, whose
    amounts or wallets may have changed (docs/architecture.md §24); a full set: everyone.
    """
    with engine.connect() as conn:
        members = None if change_set is None else change_set_members(conn, change_set)
        return [
            int(r.customer_id)
            for r in conn.execute(
                _DUE if members is None else _DUE_CHANGED,
                {"as_of": as_of, "since": _since(as_of, grace_hours),
                 "only": list(only) if only is not None else None,
                 "skip": list(skip) if skip else None, "members": members},
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
    top: list[TopDeduction] = field(default_factory=list)
    # Customers that failed alone and were contained (tasks/runs/containment.py), as plain dicts.
    failed: list[ContainedFailure] = field(default_factory=list)


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
      -- a finalized invoice closed the period: its last deduction was made there (invoicing);
      -- a voided one keeps it closed (docs/architecture.md §13)
      and not exists (select 1 from invoice_subscriptions i
                      join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
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


_Key = tuple[int, datetime]


@dataclass(frozen=True)
class _Inputs:
    """What a batch's deductions are planned from, read under the customers' locks: the usage
    in scope (``_SCOPE`` rows), the wallets' balances and what each shrinking scope took."""

    scopes: Sequence[Any]
    funds: dict[int, WalletFunds]
    meta: dict[int, _Meta]
    wallets_of: dict[int, list[int]]
    taken: dict[_Key, list[tuple[int, Decimal, Decimal, Decimal]]]

    def usage_scopes(self) -> list[UsageScope]:
        return [
            UsageScope((s.subscription_id, s.period_start), s.customer_id, s.currency,
                       s.amount_cents, s.deducted_cents,
                       tuple(self.taken.get((s.subscription_id, s.period_start), ())))
            for s in self.scopes
        ]

    @property
    def active(self) -> set[int]:
        return {w for w, m in self.meta.items() if m.active}


def deduct_customers(
    engine: Engine,
    customer_ids: Sequence[int],
    as_of: datetime,
    run_id: int | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> DeductionBatch:
    """Deduct, for these customers, the difference between usage and what is deducted.

    One transaction: lock the customers' wallets, read usage in scope, positions and balances,
    plan every (subscription, period)'s delta with the pure ``plan_deductions`` (growth:
    outbound by priority, overflow into the last wallet; decrease: inbound correction, last
    consumption first), then post all rows and move the positions. A crash or a retry rolls
    the whole batch back; a concurrent run waits on the lock and then finds nothing left to do.
    """
    result = DeductionBatch()
    if not customer_ids:
        return result
    ids = sorted(set(customer_ids))
    with engine.begin() as conn:
        lock_customers(conn, ids)
        failpoint("wallets.deduct_locked", conn)
        for customer_id in ids:
            failpoint("wallets.deduct_customer", customer_id)
        inputs = _read_inputs(conn, ids, as_of, _since(as_of, grace_hours))
        plan = plan_deductions(inputs.usage_scopes(), inputs.funds, inputs.wallets_of,
                               inputs.active)
        rows, positions = _ledger_rows(result, plan, inputs)
        result.uncovered_cents += plan.uncovered_cents
        result.transactions = post(conn, rows, as_of, run_id)
        failpoint("wallets.deduct_posted", conn)
        _move_positions(conn, positions)
        failpoint("wallets.before_batch_commit")
        result.customers = len({p[2] for p in positions})
        result.wallets = sorted({row.wallet_id for row in rows})
        result.negative = [
            Negative(w, inputs.meta[w].code, inputs.meta[w].external_customer_id,
                     credits_text(plan.funds[w].credits_balance),
                     cents_value(plan.overflow_cents.get(w, ZERO)))
            for w in result.wallets
            if plan.funds[w].balance_cents < 0 or plan.funds[w].credits_balance < 0
        ]
        result.top.sort(key=lambda item: (-Decimal(str(item["amount_cents"])), item["customer"]))
        result.top = result.top[:10]
    failpoint("wallets.mid_batch")
    return result


def _read_inputs(conn: Connection, ids: Sequence[int], as_of: datetime, since: datetime) -> _Inputs:
    """Usage in scope, then the wallets, then what the shrinking scopes took (in that order,
    under the locks ``deduct_customers`` holds)."""
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
    taken: dict[_Key, list[tuple[int, Decimal, Decimal, Decimal]]] = defaultdict(list)
    if shrinking:
        for d in conn.execute(USAGE_DEDUCTED, {
            "subs": [s.subscription_id for s in shrinking],
            "starts": [s.period_start for s in shrinking],
        }):
            taken[(d.subscription_id, d.period_start)].append(
                (d.wallet_id, d.amount_cents, d.credits, d.granted_credits)
            )
    return _Inputs(scopes, funds, meta, wallets_of, taken)


def _ledger_rows(
    result: DeductionBatch, plan: DeductionPlan, inputs: _Inputs
) -> tuple[list[LedgerRow], list[tuple[Any, ...]]]:
    """The plan as ledger rows (idempotency key: scope, position revision, wallet) and the
    positions each scope moves to; adds each scope to the batch's totals."""
    rows_of = {(s.subscription_id, s.period_start): s for s in inputs.scopes}
    rows: list[LedgerRow] = []
    positions: list[tuple[Any, ...]] = []
    for planned in plan.scopes:
        s = rows_of[planned.scope.key]
        _record(result, planned.allocation, inputs.meta, s, planned.moved_cents)
        for posting in planned.allocation.postings:
            rows.append(LedgerRow(
                posting.wallet_id, s.customer_id, posting.direction, "settled", "usage",
                posting.credits, posting.amount_cents,
                f"usage:{s.subscription_id}:{iso_key(s.period_start)}:{s.revision}:"
                f"{posting.wallet_id}",
                granted_credits=posting.granted_credits, subscription_id=s.subscription_id,
                period_start=s.period_start, snapshot_id=s.snapshot_id,
                note=f"usage of {s.external_subscription_id}: {s.deducted_cents} -> "
                     f"{s.deducted_cents + planned.moved_cents} cents",
            ))
        positions.append((s.subscription_id, s.period_start, s.customer_id,
                          s.deducted_cents + planned.moved_cents, s.revision + 1,
                          s.snapshot_id))
    return rows, positions


def _move_positions(conn: Connection, positions: Sequence[tuple[Any, ...]]) -> None:
    if positions:
        conn.execute(_POSITIONS, {
            "subs": [p[0] for p in positions], "starts": [p[1] for p in positions],
            "customers": [p[2] for p in positions], "deducted": [p[3] for p in positions],
            "revisions": [p[4] for p in positions], "snapshots": [p[5] for p in positions],
        })


STEP = "wallet-deductions"


def deduct_contained(
    engine: Engine,
    customer_ids: Sequence[int],
    as_of: datetime,
    run_id: int | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> DeductionBatch:
    """``deduct_customers`` for a batch, with a failure contained to its customer.

    One transaction for the batch as before; only when it fails for a reason of its own is it
    bisected (tasks/runs/containment.py), so every other customer's deductions commit and each
    customer that fails alone is reported in ``failed`` with its error. Its ledger stays as
    the last run left it; the next run (or a rerun) deducts the whole delta, once.
    """
    parts, failed = contain(
        sorted(set(customer_ids)),
        lambda part: deduct_customers(engine, part, as_of, run_id, grace_hours),
    )
    batch = parts[0] if len(parts) == 1 else _combine(parts)
    if failed:
        with engine.connect() as conn:
            names = names_of(conn, "customer", [cid for cid, _ in failed])
        batch.failed = []
        for cid, exc in failed:
            external_id, customer = names.get(cid, (None, None))
            batch.failed.append(failure(STEP, "customer", cid, external_id, customer, exc))
    return batch


def _combine(parts: Sequence[DeductionBatch]) -> DeductionBatch:
    out = DeductionBatch()
    for part in parts:
        out.customers += part.customers
        out.wallets += part.wallets
        out.transactions += part.transactions
        out.credits_deducted += part.credits_deducted
        out.amount_cents_deducted += part.amount_cents_deducted
        out.corrections += part.corrections
        out.credits_corrected += part.credits_corrected
        out.amount_cents_corrected += part.amount_cents_corrected
        out.uncovered_cents += part.uncovered_cents
        out.negative += part.negative
        out.top += part.top
    out.wallets.sort()
    out.top.sort(key=lambda item: (-Decimal(str(item["amount_cents"])), item["customer"]))
    out.top = out.top[:10]
    return out


def _record(
    result: DeductionBatch, allocation: Allocation, meta: dict[int, _Meta], scope: Any,
    moved: Decimal,
) -> None:
    """Add one scope's postings to the batch totals (what the run summary reports)."""
    for posting in allocation.postings:
        if posting.direction == "outbound":
            result.credits_deducted += posting.credits
            result.amount_cents_deducted += posting.amount_cents
        else:
            result.corrections += 1
            result.credits_corrected += posting.credits
            result.amount_cents_corrected += posting.amount_cents
    result.top.append({
        "customer": meta[allocation.postings[0].wallet_id].external_customer_id,
        "subscription": scope.external_subscription_id,
        "amount_cents": cents_value(moved),
        "usage_cents": cents_value(round_minor(scope.amount_cents)),
    })


def batch_dict(batch: DeductionBatch) -> DeductionBatchFigures:
    """A batch as plain JSON-able values (for summaries and artifacts)."""
    out = asdict(batch)
    for key, value in out.items():
        if isinstance(value, Decimal):
            out[key] = format(value, "f")
    return cast(DeductionBatchFigures, out)


def chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
