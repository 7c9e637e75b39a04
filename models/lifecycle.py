"""Subscription lifecycle rules: pending starts and terminations, as Lago has them.

Pure (docs/architecture.md §1): the tasks read the moments from the database and ask these
functions what they mean. Why the rules are what they are:

- A subscription whose ``subscription_at`` is still ahead is ``pending`` (Lago's status); its
  events are stored and counted as unbillable, never billed, until it starts.
- A subscription ends at the earlier of ``terminated_at`` (set by a termination) and
  ``ending_at`` (the catalog's planned end): usage after that moment is unbillable, and the
  partial period is invoiced at once (prorated subscription fee, charges up to the end) unless
  ``on_termination_invoice`` is ``skip``.
- Terminating a subscription that has not started yet, at a moment before its start, is
  Lago's cancel: the row becomes ``canceled`` (it never bills; its events stay unbillable) and
  its external id is free for a new subscription. A plan change waiting for its period end is
  canceled with the row it would have replaced when that row is terminated.
- A termination may not reach back into a finalized invoice's period (finalized invoices never
  change, design.md "Invoices"), nor before the start, nor past a planned end it would extend
  (terminating only ever ends a subscription earlier).
- A plan change ends the row in force and starts a row with the same external id on the new
  plan (Lago's ``previous_subscription``): an upgrade (the new plan's yearly amount is at least
  the old one's) at once, the old row invoiced prorated like a termination; a downgrade at the
  end of the current period. The new row keeps the original ``subscription_at`` as the anchor
  of its periods and lives from the change (``started_at``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, Literal, TypeVar

OnTerminationInvoice = Literal["generate", "skip"]
ON_TERMINATION_INVOICE: Final[tuple[str, ...]] = ("generate", "skip")


class SubscriptionStatus(StrEnum):
    """Lago's subscription statuses that Tallyflow derives from the moments it stores."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"
    CANCELED = "canceled"


def cancels(*, subscription_at: datetime, at: datetime, now: datetime) -> bool:
    """A termination at ``at`` asked at ``now`` is Lago's cancel of a pending subscription:
    it has not started, and the end asked for comes before its start (a later ``at`` is a
    planned end, kept like ``ending_at``)."""
    return now < subscription_at and at < subscription_at


def effective_end(terminated_at: datetime | None, ending_at: datetime | None) -> datetime | None:
    """When the subscription stops billing: the earlier of a termination and a planned end."""
    ends = [moment for moment in (terminated_at, ending_at) if moment is not None]
    return min(ends) if ends else None


# Which subscription row bills an event: the one rule, in SQL and in Python. A plan change adds
# a row with the same external id living from ``started_at`` (the first row from
# ``subscription_at``); a row ends at the earlier of its termination and its planned end; a
# canceled row never bills. Both bounds are inclusive. The fragments name the subscription
# table ``s``.
ROW_STARTS_SQL: Final = "coalesce(s.started_at, s.subscription_at)"
ROW_ENDS_SQL: Final = "least(s.terminated_at, s.ending_at)"
BILLING_ROW_SQL: Final = "s.status <> 'canceled'"


def life_holds_sql(moment: str) -> str:
    """SQL true when the life of subscription row ``s`` holds ``moment`` (an SQL expression)."""
    return (f"{moment} >= {ROW_STARTS_SQL}"
            f" and {moment} <= coalesce({ROW_ENDS_SQL}, 'infinity')")


Row = TypeVar("Row")


def row_in_force(
    rows: Sequence[Row], at: datetime,
    life: Callable[[Row], tuple[datetime, datetime | None]],
) -> Row | None:
    """The row of one external id that bills ``at``, among its rows that may bill (not
    canceled), oldest first: the one whose life (``life(row)``: its start and effective end)
    holds ``at``, else the last one started by then (terminated), else the first (pending).
    Their lives do not overlap, so at most one holds ``at``."""
    started = [row for row in rows if life(row)[0] <= at]
    for row in started:
        end = life(row)[1]
        if end is None or at <= end:
            return row
    return started[-1] if started else (rows[0] if rows else None)


def status_at(
    subscription_at: datetime, ends_at: datetime | None, at: datetime
) -> SubscriptionStatus:
    """The status at ``at``: pending before the start, terminated after the end (inclusive
    bounds, as events count when ``subscription_at <= timestamp <= terminated_at``)."""
    if at < subscription_at:
        return SubscriptionStatus.PENDING
    if ends_at is not None and at > ends_at:
        return SubscriptionStatus.TERMINATED
    return SubscriptionStatus.ACTIVE


@dataclass(frozen=True)
class LifecycleRefusal:
    """Why a lifecycle operation cannot happen, and what to do instead (one line each)."""

    message: str
    hint: str


def termination_refusal(
    *,
    external_id: str,
    at: datetime,
    subscription_at: datetime,
    terminated_at: datetime | None,
    ending_at: datetime | None,
    finalized_until: datetime | None,
) -> LifecycleRefusal | None:
    """None when ``external_id`` may be terminated at ``at``; else why not.

    ``finalized_until`` is the end of the subscription's last period on a finalized invoice.
    """
    when = at.isoformat()
    if terminated_at is not None:
        return LifecycleRefusal(
            f"subscription {external_id!r} is already terminated (at "
            f"{terminated_at.isoformat()})",
            "a terminated subscription stays terminated; apply a new subscription to bill again",
        )
    if at < subscription_at:
        return LifecycleRefusal(
            f"cannot terminate {external_id!r} at {when}: it starts at "
            f"{subscription_at.isoformat()}",
            f"give --at {subscription_at.isoformat()} or later",
        )
    if finalized_until is not None and at <= finalized_until:
        return LifecycleRefusal(
            f"cannot terminate {external_id!r} at {when}: its periods up to "
            f"{finalized_until.isoformat()} are on a finalized invoice",
            f"give --at after {finalized_until.isoformat()} (finalized invoices never change)",
        )
    if ending_at is not None and at > ending_at:
        return LifecycleRefusal(
            f"cannot terminate {external_id!r} at {when}: it already ends at "
            f"{ending_at.isoformat()} (ending_at)",
            "a termination can only end a subscription earlier than its ending_at",
        )
    return None



@dataclass(frozen=True)
class TerminationStep:
    """What a termination request means for the row as it stands.

    ``ended``: a termination already recorded (a waiting downgrade's end is not one);
    ``planned``: the planned end the termination may bring forward (``ending_at``, or the end
    a waiting downgrade set); ``cancel``: it never started, so it is canceled, not terminated;
    ``rerun``: the same termination again, finished without changing the row.
    """

    ended: datetime | None
    planned: datetime | None
    cancel: bool
    rerun: bool


def termination_step(
    *,
    at: datetime,
    now: datetime,
    subscription_at: datetime,
    terminated_at: datetime | None,
    ending_at: datetime | None,
    downgrade_waiting: bool,
) -> TerminationStep:
    """Read the row's ends: a downgrade waiting for the period end set ``terminated_at``, a
    planned end that a termination may bring forward (canceling the downgrade), like
    ``ending_at``."""
    ended = None if downgrade_waiting else terminated_at
    planned = effective_end(terminated_at if downgrade_waiting else None, ending_at)
    return TerminationStep(
        ended,
        planned,
        cancel=ended is None and cancels(subscription_at=subscription_at, at=at, now=now),
        rerun=ended is not None and ended == at,
    )


def termination_step_refusal(
    step: TerminationStep,
    *,
    external_id: str,
    at: datetime,
    subscription_at: datetime,
    finalized_until: datetime | None,
) -> LifecycleRefusal | None:
    """``termination_refusal`` for a step that is neither a cancel nor a rerun; a termination
    already recorded at another moment is finished by rerunning it at that moment."""
    refusal = termination_refusal(
        external_id=external_id, at=at, subscription_at=subscription_at,
        terminated_at=step.ended, ending_at=step.planned, finalized_until=finalized_until,
    )
    if refusal is not None and step.ended is not None:
        refusal = LifecycleRefusal(
            refusal.message, f"to finish that termination, rerun with --at {step.ended.isoformat()}"
        )
    return refusal


# --------------------------------------------------------------------------------------------
# Plan changes
# --------------------------------------------------------------------------------------------

_PER_YEAR: Final[dict[str, int]] = {
    "weekly": 52, "monthly": 12, "quarterly": 4, "semiannual": 2, "yearly": 1,
}
ONE_MICROSECOND: Final = timedelta(microseconds=1)


def yearly_amount_cents(amount_cents: Decimal, interval: str) -> Decimal:
    """A plan's subscription fee over a year (Lago's ``Plan#yearly_amount_cents``)."""
    return amount_cents * _PER_YEAR[interval]


@dataclass(frozen=True)
class PlanChange:
    """What a plan change does: Lago's upgrade (the new plan costs at least as much a year)
    takes over at once; a downgrade waits for the end of the current period. The old row ends
    one microsecond before the new one starts, so no instant belongs to both (bounds are
    inclusive)."""

    upgrade: bool
    old_ends_at: datetime
    new_starts_at: datetime

    @property
    def kind(self) -> str:
        return "upgrade" if self.upgrade else "downgrade"


def plan_change(
    *,
    at: datetime,
    old_amount_cents: Decimal,
    old_interval: str,
    new_amount_cents: Decimal,
    new_interval: str,
    period_end: datetime,
) -> PlanChange:
    """The change requested at ``at``; ``period_end`` ends the old plan's period holding it."""
    upgrade = (yearly_amount_cents(new_amount_cents, new_interval)
               >= yearly_amount_cents(old_amount_cents, old_interval))
    if upgrade:
        return PlanChange(True, at - ONE_MICROSECOND, at)
    return PlanChange(False, period_end, period_end + ONE_MICROSECOND)


def plan_change_refusal(
    *,
    external_id: str,
    at: datetime,
    starts_at: datetime,
    ends_at: datetime | None,
    same_plan: bool,
    pending_change: bool,
    finalized_until: datetime | None,
) -> LifecycleRefusal | None:
    """None when the row in force may change plan at ``at``; else why not."""
    when = at.isoformat()
    if same_plan:
        return LifecycleRefusal(f"subscription {external_id!r} is already on that plan",
                                "name another plan code")
    if pending_change:
        return LifecycleRefusal(
            f"subscription {external_id!r} already has a plan change waiting for its period "
            f"end", "wait for it to take effect, then change again")
    if at < starts_at:
        return LifecycleRefusal(
            f"cannot change the plan of {external_id!r} at {when}: it starts at "
            f"{starts_at.isoformat()}",
            "change the plan_code of a pending subscription in its catalog file instead")
    if ends_at is not None and at > ends_at:
        return LifecycleRefusal(
            f"cannot change the plan of {external_id!r} at {when}: it ended at "
            f"{ends_at.isoformat()}", "apply a new subscription instead")
    if finalized_until is not None and at <= finalized_until:
        return LifecycleRefusal(
            f"cannot change the plan of {external_id!r} at {when}: its periods up to "
            f"{finalized_until.isoformat()} are on a finalized invoice",
            f"give --at after {finalized_until.isoformat()}")
    return None
