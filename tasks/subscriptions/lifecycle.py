"""Subscription lifecycle I/O: terminate a subscription; say where one stands.

The rules are in ``models/lifecycle.py``; this module applies them to the database. Why a
termination is safe to retry, crash and rerun (docs/architecture.md §3, invariants 2, 4, 5):

1. One transaction, holding the fold lock exclusively, records ``terminated_at``, recomputes the
   subscription's usage state from its raw events (events after the end no longer count), and
   rewinds the per-period amounts the wallets follow: periods after the end owe nothing, and
   the period holding the end is set to be replaced by the final snapshot. Either all of it
   commits or none of it.
2. Then, each idempotent: the final snapshot (as of the end), the wallet deductions of the
   customer (a convergent delta: usage that had been deducted after the end comes back as an
   inbound correction), and the period close that issues the termination invoice.
3. Running the same termination again (same subscription, same ``--at``) redoes step 2 only, so
   a crash between the steps is finished by a rerun; another moment is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.catalog import digest, dumps, loads
from tallyflow.models.credit_notes import DEFAULT_TERMINATION_CHOICE, TERMINATION_CHOICES
from tallyflow.models.lago.results import (
    PlanChangeSummary,
    SubscriptionStanding,
    SubscriptionTermination,
    TerminationInvoice,
)
from tallyflow.models.lifecycle import (
    ROW_STARTS_SQL,
    LifecycleRefusal,
    PlanChange,
    SubscriptionStatus,
    TerminationStep,
    effective_end,
    plan_change,
    plan_change_refusal,
    row_in_force,
    status_at,
    termination_step,
    termination_step_refusal,
)
from tallyflow.models.rating.periods import period_containing
from tallyflow.tasks.corrections import CreditNoteRefused, issue_termination_credit_note
from tallyflow.tasks.folding import FOLD_LOCK, rebuild_subscription
from tallyflow.tasks.invoicing import close_periods
from tallyflow.tasks.runs import transient_retries
from tallyflow.tasks.subscriptions.announce import announce_terminated
from tallyflow.tasks.usage import snapshot_subscriptions
from tallyflow.tasks.wallets import deduct_customers


class LifecycleError(UserError):
    """A lifecycle operation the subscription's state does not allow (one line + hint)."""

    @classmethod
    def of(cls, refusal: LifecycleRefusal) -> LifecycleError:
        return cls(refusal.message, refusal.hint)


# Every row of an external id, oldest first (a plan change adds one, models/lifecycle.py);
# ``subscription_at`` is when the row's life starts.
_SUBSCRIPTION = text(
    f"""
    select s.id, s.external_id, s.customer_id, c.external_id as external_customer_id,
           {ROW_STARTS_SQL} as subscription_at, s.terminated_at,
           s.ending_at, s.on_termination_invoice, s.plan_id, s.subscription_at as anchor_at,
           s.on_termination_credit_note,
           s.previous_subscription_id, s.status
    from subscriptions s join customers c on c.id = s.customer_id
    where s.external_id = :x
    order by {ROW_STARTS_SQL}, s.id
    """  # noqa: S608 - fixed text
)


def _row_at(conn: Connection, external_id: str, at: datetime) -> Any:
    """The row of ``external_id`` in force at ``at`` (``models.lifecycle.row_in_force``, as
    ``tasks.folding.in_force`` picks); canceled rows never bill."""
    every = conn.execute(_SUBSCRIPTION, {"x": external_id}).all()
    rows = [r for r in every if r.status != SubscriptionStatus.CANCELED]
    if not rows:
        if every:
            raise LifecycleError(
                f"subscription {external_id!r} was canceled (at "
                f"{every[-1].terminated_at.isoformat()}) before it started",
                "apply a subscription with this external_id to subscribe again")
        raise LifecycleError(f"unknown subscription {external_id!r}",
                             "tallyflow catalog show lists the subscriptions")
    return row_in_force(
        rows, at, lambda r: (r.subscription_at, effective_end(r.terminated_at, r.ending_at)))


# A plan change waiting for the period end of the row it replaces (a downgrade): canceled with
# that row's termination, as Lago cancels the next subscription.
_WAITING = text("select 1 from subscriptions where previous_subscription_id = :id"
                " and status = 'pending' and terminated_at is null and started_at > :now")
_CANCEL_WAITING = text(
    """
    update subscriptions set status = 'canceled', terminated_at = :now, updated_at = now()
    where previous_subscription_id = :id and status = 'pending' and terminated_at is null
      and started_at > :at
    """
)


def _cancel(conn: Connection, sub: Any, now: datetime) -> Termination:
    """Lago's cancel of a pending subscription: it never bills, its id is free again."""
    conn.execute(
        text("update subscriptions set status = 'canceled', terminated_at = :now,"
             " updated_at = now() where id = :id"), {"now": now, "id": sub.id})
    conn.execute(_CANCEL_WAITING, {"id": sub.id, "now": now, "at": now})
    return Termination(sub.external_id, sub.external_customer_id, now,
                       str(SubscriptionStatus.CANCELED), on_termination_invoice="skip")


# The end of the subscription's last period on a finalized invoice (its own end: a terminated
# period ends at its termination).
_FINALIZED_UNTIL = text(
    """
    select max(i.to_datetime) from invoice_subscriptions i
    join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
    where i.subscription_id = :id
    """
)


@dataclass
class Termination:
    """What a termination did (the CLI prints it; ``--json`` prints ``as_dict()``)."""

    external_id: str
    external_customer_id: str
    terminated_at: datetime
    status: str
    rerun: bool = False
    events_refolded: int = 0
    periods_zeroed: int = 0
    final_snapshot_cents: int | None = None
    wallet_deducted_cents: Decimal = Decimal(0)
    wallet_credited_back_cents: Decimal = Decimal(0)
    on_termination_invoice: str = "generate"
    invoices: list[TerminationInvoice] = field(default_factory=list)
    advance_fee_not_credited: bool = False
    """The plan is paid in advance and no credit note was issued (``on_termination_credit_note``
    ``skip``, or nothing left to credit): the fee billed at the period's start stays billed
    in full; said here rather than silently (docs/credit-notes.md)."""
    credit_note: dict[str, Any] | None = None
    """The credit note for the unused days (Lago's ``on_termination_credit_note``)."""

    def as_dict(self) -> SubscriptionTermination:
        return {
            "external_id": self.external_id,
            "external_customer_id": self.external_customer_id,
            "terminated_at": self.terminated_at.isoformat(),
            "status": self.status, "rerun": self.rerun,
            "events_refolded": self.events_refolded, "periods_zeroed": self.periods_zeroed,
            "final_snapshot_cents": self.final_snapshot_cents,
            "wallet_deducted_cents": str(self.wallet_deducted_cents),
            "wallet_credited_back_cents": str(self.wallet_credited_back_cents),
            "on_termination_invoice": self.on_termination_invoice,
            "invoices": deepcopy(self.invoices),
            "advance_fee_not_credited": self.advance_fee_not_credited,
            "credit_note": deepcopy(self.credit_note),
        }


def _advance_fee_not_credited(conn: Connection, plan_id: int) -> bool:
    """Whether ending a row of this plan early may leave a fee paid in advance uncredited:
    true until a termination credit note is issued (docs/credit-notes.md)."""
    return bool(conn.execute(
        text("select pay_in_advance and amount_cents > 0 from plans where id = :p"),
        {"p": plan_id}).scalar())


def rewind_amounts(
    conn: Connection, subscription_id: int, end: datetime, now: datetime
) -> list[datetime]:
    """The per-period amounts the wallets follow, after the subscription's end moved to
    ``end``: periods after it owe nothing (returned: their starts), and the amount of the
    period holding it may be replaced by the final snapshot, taken as of ``end`` (amounts
    otherwise only move forward in time, so a later hourly snapshot would shadow it)."""
    zeroed = list(conn.execute(
        text(
            """
            update usage_amounts set amount_cents = 0, precise_amount_cents = 0,
              as_of = greatest(as_of, :now), updated_at = now()
            where subscription_id = :id and period_start > :end
            returning period_start
            """
        ),
        {"id": subscription_id, "end": end, "now": now},
    ).scalars())
    conn.execute(
        text(
            """
            update usage_amounts set as_of = :end, updated_at = now()
            where subscription_id = :id and period_start <= :end and period_end >= :end
              and as_of > :end
            """
        ),
        {"id": subscription_id, "end": end},
    )
    return zeroed


def dates_changed(
    conn: Connection, subscription_id: int, external_id: str, now: datetime
) -> None:
    """A catalog apply moved the subscription's start or planned end (``ending_at``): its
    usage state is recomputed under the new dates in the apply's transaction, and the amounts
    the wallets follow are rewound (the next billing cycle takes the final snapshot and posts
    the correction: ``final_snapshots``)."""
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
    rebuild_subscription(conn, subscription_id, external_id)
    row = conn.execute(
        text("select least(terminated_at, ending_at) as ends from subscriptions where id = :id"),
        {"id": subscription_id},
    ).one()
    if row.ends is not None:
        rewind_amounts(conn, subscription_id, row.ends, now)


_NEEDS_FINAL = text(
    """
    select s.id, least(s.terminated_at, s.ending_at) as ends
    from subscriptions s
    where least(s.terminated_at, s.ending_at) <= :as_of
      and least(s.terminated_at, s.ending_at) >= coalesce(s.started_at, s.subscription_at)
      and not exists (select 1 from usage_snapshots u
                      where u.subscription_id = s.id
                        and u.as_of = least(s.terminated_at, s.ending_at))
    order by s.id
    """
)


def final_snapshots(engine: Engine, as_of: datetime) -> int:
    """Take the final snapshot (usage as of the end) of every subscription that has ended by
    ``as_of`` without one, and mark it terminated; returns how many. Also marks active a plan
    change's row whose start has come.

    The hourly snapshot only prices subscriptions active at its hour, so an end reached by the
    calendar (``ending_at``), or a termination whose follow-up crashed, is finished here: the
    wallet deductions of the same cycle then post the correction, and the period close issues
    the termination invoice.
    """
    with engine.begin() as conn:
        # a downgrade's row waits as pending until its period starts
        conn.execute(text("update subscriptions set status = 'active', updated_at = now()"
                          " where status = 'pending' and started_at <= :as_of"),
                     {"as_of": as_of})
        rows = conn.execute(_NEEDS_FINAL, {"as_of": as_of}).all()
    by_end: dict[datetime, list[int]] = {}
    for row in rows:
        by_end.setdefault(row.ends, []).append(int(row.id))
    for end, ids in sorted(by_end.items()):
        snapshot_subscriptions(engine, ids, end)
    if rows:
        with engine.begin() as conn:
            marked = conn.execute(
                text("update subscriptions set status = 'terminated', updated_at = now()"
                     " where id = any(cast(:ids as bigint[])) and status <> 'terminated'"
                     " returning id"),
                {"ids": [int(r.id) for r in rows]},
            ).scalars().all()
            announce_terminated(conn, marked)
    return len(rows)


@task(name="final-snapshots", **transient_retries(retries=3, backoff_factor=1))
def final_snapshots_task(as_of: datetime) -> int:
    return final_snapshots(billing_engine(), as_of)


def terminate_subscription(
    engine: Engine,
    external_id: str,
    at: datetime | None = None,
    *,
    now: datetime | None = None,
    on_termination_invoice: str | None = None,
    on_termination_credit_note: str | None = None,
) -> Termination:
    """Terminate ``external_id`` at ``at`` (default: now), as Lago's terminate call does.

    Usage after ``at`` becomes unbillable (state rebuilt, wallet corrected), a final snapshot is
    taken as of ``at``, and unless ``on_termination_invoice`` (or the subscription's own
    setting) is ``"skip"`` the partial period is invoiced at once when ``at`` has passed (a
    draft until the ingest watermark and the grace period allow finalizing it, like any
    invoice). A future ``at`` is invoiced by the billing cycle after it. For a plan paid in
    advance, ``on_termination_credit_note`` (``credit``, the default as in Lago, ``refund``,
    ``offset``, ``skip``) credits the unused days of the fee paid at the period's start
    (``issue_termination_credit_note``).
    Raises ``LifecycleError`` for an unknown subscription or a moment the rules refuse.
    """
    now = now or datetime.now(UTC)
    at = at or now
    if at.tzinfo is None:
        raise LifecycleError(f"--at {at.isoformat()} has no timezone",
                             "give an offset, e.g. 2026-11-27T10:00:00Z")
    _check_note_choice(on_termination_credit_note, TERMINATION_CHOICES)
    with engine.begin() as conn:
        # Exclusive: no fold lands between the new end and the rebuilt state.
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
        sub = _row_at(conn, external_id, at)
        conn.execute(text("select 1 from subscriptions where id = :id for update"), {"id": sub.id})
        step = termination_step(
            at=at, now=now, subscription_at=sub.subscription_at,
            terminated_at=sub.terminated_at, ending_at=sub.ending_at,
            downgrade_waiting=conn.execute(_WAITING, {"id": sub.id, "now": now}).first()
            is not None,
        )
        choice = on_termination_invoice or sub.on_termination_invoice
        note_choice = (on_termination_credit_note or sub.on_termination_credit_note
                       or DEFAULT_TERMINATION_CHOICE)  # Lago: a blank choice is credit
        if step.cancel:
            return _cancel(conn, sub, now)
        if not step.rerun:
            _end_row(conn, sub, external_id, step, at, now, (choice, note_choice))
        result = Termination(external_id, sub.external_customer_id, at,
                             str(status_at(sub.subscription_at, at, now)), step.rerun,
                             on_termination_invoice=choice)
        result.advance_fee_not_credited = _advance_fee_not_credited(conn, sub.plan_id)
        if not step.rerun:
            result.events_refolded = rebuild_subscription(conn, sub.id, external_id)
        zeroed = rewind_amounts(conn, sub.id, at, now)
        result.periods_zeroed = len(zeroed)
    failpoint("lifecycle.after_terminate_commit")
    _after_termination(engine, result, sub, at, now, zeroed)
    if not step.cancel:
        result.credit_note = _termination_note(engine, sub.id, note_choice, now)
        result.advance_fee_not_credited &= result.credit_note is None
    return result


def _check_note_choice(choice: str | None, allowed: Sequence[str]) -> None:
    if choice is not None and choice not in allowed:
        raise LifecycleError(f"on_termination_credit_note {choice!r} is not one of "
                             f"{', '.join(allowed)}",
                             "Lago refuses a refund or an offset with an upgrade"
                             if choice in ("refund", "offset")
                             else "credit the unused days, refund them, offset them, or skip")


def _termination_note(engine: Engine, subscription_id: int, choice: str, now: datetime,
                      upgrade: bool = False) -> dict[str, object] | None:
    """The credit note of the unused days, its refusals as the lifecycle's (one line)."""
    try:
        note = issue_termination_credit_note(engine, subscription_id, choice, upgrade=upgrade,
                                             at=now)
    except CreditNoteRefused as exc:
        raise LifecycleError(f"on_termination_credit_note: {exc}",
                             "credit or skip (Lago refuses a refund or an offset with an "
                             "upgrade)") from exc
    return dict(note) if note is not None else None


def _end_row(
    conn: Connection, sub: Any, external_id: str, step: TerminationStep, at: datetime,
    now: datetime, choices: tuple[str, str],
) -> None:
    """Set the row's end (refused as ``termination_step_refusal`` says) and cancel the plan
    change waiting for it, under the fold lock and the row lock the caller holds. The
    choices used are stored as Lago's ``update_on_termination_actions!`` does (the credit
    note's only on a plan paid in advance)."""
    refusal = termination_step_refusal(
        step, external_id=external_id, at=at, subscription_at=sub.subscription_at,
        finalized_until=conn.execute(_FINALIZED_UNTIL, {"id": sub.id}).scalar(),
    )
    if refusal is not None:
        raise LifecycleError.of(refusal)
    conn.execute(
        text(
            """
            update subscriptions set terminated_at = :at, on_termination_invoice = :c,
              on_termination_credit_note = case
                when (select pay_in_advance from plans where id = subscriptions.plan_id)
                then :n else on_termination_credit_note end,
              status = case when :at <= :now then 'terminated' else status end,
              updated_at = now()
            where id = :id
            """
        ),
        {"at": at, "now": now, "c": choices[0], "n": choices[1], "id": sub.id},
    )
    conn.execute(_CANCEL_WAITING, {"id": sub.id, "now": now, "at": at})
    if at <= now:
        announce_terminated(conn, [sub.id])


def _after_termination(
    engine: Engine, result: Termination, sub: Any, at: datetime, now: datetime,
    zeroed: Sequence[datetime],
) -> None:
    """After the commit: the final snapshot, the wallet correction of every rewound period,
    and the termination invoice when ``at`` has passed (each step safe to redo: a crash
    between them is finished by the next billing cycle, ``final_snapshots``)."""
    final = min(at, now)
    batch = snapshot_subscriptions(engine, [sub.id], final)
    result.final_snapshot_cents = batch.amount_cents if batch.snapshots else None
    failpoint("lifecycle.after_final_snapshot")
    for moment in sorted({final, *zeroed}):
        moved = deduct_customers(engine, [sub.customer_id], moment)
        result.wallet_deducted_cents += moved.amount_cents_deducted
        result.wallet_credited_back_cents += moved.amount_cents_corrected
    if result.on_termination_invoice != "skip" and at < now:
        summary = close_periods(engine, now, customers=[sub.external_customer_id], now=now)
        result.invoices = _invoices_of(engine, sub.id)
        del summary


def _invoices_of(engine: Engine, subscription_id: int) -> list[TerminationInvoice]:
    """The invoices holding the subscription's last period (the termination invoice)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                select v.number, v.status, v.issuing_date, v.currency, v.fees_amount_cents,
                       v.total_amount_cents, i.from_datetime, i.to_datetime
                from invoice_subscriptions i join invoices v on v.id = i.invoice_id
                where i.subscription_id = :id
                order by i.period_start desc limit 1
                """
            ),
            {"id": subscription_id},
        ).all()
    return [
        {"number": r.number, "status": r.status, "issuing_date": r.issuing_date.isoformat(),
         "currency": r.currency, "fees_amount_cents": int(r.fees_amount_cents),
         "total_amount_cents": int(r.total_amount_cents),
         "from_datetime": r.from_datetime.isoformat(), "to_datetime": r.to_datetime.isoformat()}
        for r in rows
    ]


@dataclass(frozen=True)
class Standing:
    """Where a subscription stands at a moment (``tallyflow subscriptions show``, usage)."""

    external_id: str
    status: SubscriptionStatus
    subscription_at: datetime
    ends_at: datetime | None
    unbillable_before_start: int
    unbillable_after_end: int

    def as_dict(self) -> SubscriptionStanding:
        return {
            "external_id": self.external_id,
            "status": str(self.status),
            "subscription_at": self.subscription_at.isoformat(),
            "terminated_at": self.ends_at.isoformat() if self.ends_at else None,
            "unbillable_events_before_start": self.unbillable_before_start,
            "unbillable_events_after_end": self.unbillable_after_end,
        }


def subscription_standing(engine: Engine, external_id: str, at: datetime) -> Standing:
    """Status at ``at`` and the events its dates leave unbillable (counted, never billed)."""
    with engine.connect() as conn:
        sub = _row_at(conn, external_id, at)
        rows = conn.execute(_SUBSCRIPTION, {"x": external_id}).all()
        ends = effective_end(sub.terminated_at, sub.ending_at)
        last_end = effective_end(rows[-1].terminated_at, rows[-1].ending_at)
        counts = conn.execute(
            text(
                """
                select count(*) filter (where "timestamp" < :start) as before,
                       count(*) filter (where "timestamp" > :end) as after
                from events where external_subscription_id = :x and voided_at is null
                """
            ),
            {"x": external_id, "start": rows[0].subscription_at,
             "end": last_end or datetime.max.replace(tzinfo=UTC)},
        ).one()
    return Standing(external_id, status_at(sub.subscription_at, ends, at), sub.subscription_at,
                    ends, int(counts.before), int(counts.after))


# --------------------------------------------------------------------------------------------
# Plan changes (upgrade at once, downgrade at the period end)
# --------------------------------------------------------------------------------------------

_PLAN = text("select id, code, amount_cents, interval from plans where code = :code")

_ROW = text(
    """
    select s.id, s.external_id, s.customer_id, s.plan_id, s.billing_time, s.subscription_at,
           coalesce(s.started_at, s.subscription_at) as starts_at, s.terminated_at,
           s.ending_at, c.timezone, p.amount_cents, p.interval, s.document::text as document
    from subscriptions s join customers c on c.id = s.customer_id
    join plans p on p.id = s.plan_id
    where s.id = :id
    """
)

_INSERT_ROW = text(
    """
    insert into subscriptions (external_id, customer_id, plan_id, name, billing_time,
      subscription_at, ending_at, terminated_at, on_termination_invoice, started_at,
      previous_subscription_id, plan_changed_at, status, document, digest,
      on_termination_credit_note)
    select external_id, customer_id, :plan, name, billing_time, subscription_at, ending_at,
           cast(:ended as timestamptz), on_termination_invoice, :starts, id, :now,
           case when least(cast(:ended as timestamptz), ending_at) < :now then 'terminated'
                when :starts <= :now then 'active' else 'pending' end,
           cast(:doc as jsonb), :digest, on_termination_credit_note
    from subscriptions where id = :old
    returning id
    """
)


@dataclass
class PlanChangeResult:
    """What a plan change did (``--json`` prints ``as_dict()``)."""

    external_id: str
    kind: str
    previous_plan_code: str
    plan_code: str
    effective_at: datetime
    previous_subscription_id: int
    subscription_id: int
    previous_invoice: list[TerminationInvoice] = field(default_factory=list)
    advance_fee_not_credited: bool = False
    """An upgrade from a plan paid in advance without a credit note: the old plan's fee for the
    period stays billed in full (as for a termination)."""
    credit_note: dict[str, Any] | None = None

    def as_dict(self) -> PlanChangeSummary:
        return {
            "external_id": self.external_id, "kind": self.kind,
            "previous_plan_code": self.previous_plan_code, "plan_code": self.plan_code,
            "effective_at": self.effective_at.isoformat(),
            "previous_subscription_id": self.previous_subscription_id,
            "subscription_id": self.subscription_id,
            "previous_invoice": deepcopy(self.previous_invoice),
            "advance_fee_not_credited": self.advance_fee_not_credited,
            "credit_note": deepcopy(self.credit_note),
        }


def start_plan_change(
    conn: Connection,
    subscription_id: int,
    plan_code: str,
    at: datetime,
    now: datetime,
    document: dict[str, Any] | None = None,
) -> tuple[int, PlanChange, str]:
    """Record a plan change of the row ``subscription_id`` requested at ``at`` in the caller's
    transaction: end the row, add the new plan's row, and for an upgrade (which may reach back
    to ``at``) recompute both rows' usage state. Returns the new row id, the change and the
    old plan code. ``document`` is the new row's catalog document (default: the old one with
    the new ``plan_code``). Takes the fold lock exclusively."""
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
    old = conn.execute(_ROW, {"id": subscription_id}).one()
    new_plan = conn.execute(_PLAN, {"code": plan_code}).first()
    if new_plan is None:
        raise LifecycleError(f"unknown plan {plan_code!r}",
                             "tallyflow catalog show lists the plans")
    old_code = conn.execute(text("select code from plans where id = :id"),
                            {"id": old.plan_id}).scalar_one()
    ends = effective_end(old.terminated_at, old.ending_at)
    pending = conn.execute(text("select 1 from subscriptions where previous_subscription_id"
                                " = :id"), {"id": old.id}).first() is not None
    finalized_until = conn.execute(_FINALIZED_UNTIL, {"id": old.id}).scalar()
    refusal = plan_change_refusal(
        external_id=old.external_id, at=at, starts_at=old.starts_at, ends_at=ends,
        same_plan=new_plan.id == old.plan_id, pending_change=pending,
        finalized_until=finalized_until)
    if refusal is not None:
        raise LifecycleError.of(refusal)
    period = period_containing(at, old.interval, old.billing_time, old.starts_at, old.timezone,
                               ends, old.subscription_at)
    change = plan_change(at=at, old_amount_cents=Decimal(old.amount_cents),
                         old_interval=old.interval,
                         new_amount_cents=Decimal(new_plan.amount_cents),
                         new_interval=new_plan.interval, period_end=period.period_end)
    if ends is not None and change.new_starts_at > ends:
        raise LifecycleError(
            f"cannot downgrade {old.external_id!r}: it ends at {ends.isoformat()}, before "
            f"its next period", "a downgrade takes effect at the next period start")
    conn.execute(
        text("update subscriptions set terminated_at = :end, updated_at = now(),"
             " plan_changed_at = :now,"
             " status = case when :end <= :now then 'terminated' else status end"
             " where id = :id"),
        {"end": change.old_ends_at, "now": now, "id": old.id},
    )
    if change.old_ends_at <= now:
        announce_terminated(conn, [old.id])
    if document is None:
        document = loads(old.document)
        document["plan_code"] = plan_code
    # a termination of the old row ends the new one too (a change backdated before it)
    new_id = int(conn.execute(_INSERT_ROW, {
        "plan": new_plan.id, "starts": change.new_starts_at, "now": now, "old": old.id,
        "ended": old.terminated_at,
        "doc": dumps(document), "digest": digest(document),
    }).scalar_one())
    if change.upgrade:
        rebuild_subscription(conn, old.id, old.external_id)
        rebuild_subscription(conn, new_id, old.external_id)
        rewind_amounts(conn, old.id, change.old_ends_at, now)
    return new_id, change, str(old_code)


def change_plan(
    engine: Engine,
    external_id: str,
    plan_code: str,
    at: datetime | None = None,
    *,
    now: datetime | None = None,
    on_termination_credit_note: str | None = None,
) -> PlanChangeResult:
    """Move ``external_id`` to ``plan_code`` as Lago does (see ``start_plan_change``), then,
    for an upgrade already in effect, finish the old row like a termination: final snapshot,
    wallet correction, and its prorated invoice at once (unless its
    ``on_termination_invoice`` is ``skip``). A downgrade's old row is invoiced at its period
    end by the billing cycle, the new row from then on."""
    now = now or datetime.now(UTC)
    at = at or now
    _check_note_choice(on_termination_credit_note, ("credit", "skip"))
    with engine.begin() as conn:
        row = _row_at(conn, external_id, at)
        conn.execute(text("select 1 from subscriptions where id = :id for update"),
                     {"id": row.id})
        new_id, change, old_code = start_plan_change(conn, row.id, plan_code, at, now)
        in_advance = _advance_fee_not_credited(conn, row.plan_id)
        note_choice = (on_termination_credit_note or row.on_termination_credit_note
                       or DEFAULT_TERMINATION_CHOICE)  # Lago: a blank choice is credit
        if change.upgrade:  # the stored choice too (Lago refuses a refund with an upgrade)
            _check_note_choice(note_choice, ("credit", "skip"))
    result = PlanChangeResult(external_id, change.kind, old_code, plan_code,
                              change.new_starts_at, int(row.id), new_id,
                              advance_fee_not_credited=change.upgrade and in_advance)
    failpoint("lifecycle.after_plan_change_commit")
    if change.upgrade and change.old_ends_at < now:
        # the new row keeps the old one's end (ending_at, termination): one that has passed
        # ends it too, and its snapshot there is its final one (a snapshot after its end has
        # no period to price)
        ends = effective_end(row.terminated_at, row.ending_at)
        last = now if ends is None else min(now, ends)
        snapshot_subscriptions(engine, [row.id], change.old_ends_at)
        snapshot_subscriptions(engine, [new_id], last)
        deduct_customers(engine, [row.customer_id], change.old_ends_at)
        deduct_customers(engine, [row.customer_id], last)
        if row.on_termination_invoice != "skip":
            close_periods(engine, now, customers=[row.external_customer_id], now=now)
            result.previous_invoice = _invoices_of(engine, row.id)
    if change.upgrade:
        result.credit_note = _termination_note(engine, row.id, note_choice, now, upgrade=True)
        result.advance_fee_not_credited &= result.credit_note is None
    return result
