"""Subscription lifecycle rules: pending starts and terminations, as Lago has them.

Pure (docs/architecture.md §1): the tasks read the moments from the database and ask these
functions what they mean. Why the rules are what they are:

- A subscription whose ``subscription_at`` is still ahead is ``pending`` (Lago's status); its
  events are stored and counted as unbillable, never billed, until it starts.
- A subscription ends at the earlier of ``terminated_at`` (set by a termination) and
  ``ending_at`` (the catalog's planned end): usage after that moment is unbillable, and the
  partial period is invoiced at once (prorated subscription fee, charges up to the end) unless
  ``on_termination_invoice`` is ``skip``.
- A termination may not reach back into a finalized invoice's period (finalized invoices never
  change, design.md "Invoices"), nor before the start, nor past a planned end it would extend
  (terminating only ever ends a subscription earlier).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

OnTerminationInvoice = Literal["generate", "skip"]
ON_TERMINATION_INVOICE: Final[tuple[str, ...]] = ("generate", "skip")


class SubscriptionStatus(StrEnum):
    """Lago's subscription statuses that Tallyflow derives from the moments it stores."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


def effective_end(terminated_at: datetime | None, ending_at: datetime | None) -> datetime | None:
    """When the subscription stops billing: the earlier of a termination and a planned end."""
    ends = [moment for moment in (terminated_at, ending_at) if moment is not None]
    return min(ends) if ends else None


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
