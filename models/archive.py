"""Which history may leave PostgreSQL: the rule behind ``tallyflow archive --before T``.

Pure (docs/architecture.md §1). Events are archived (written to Parquet, then deleted) only
where nothing can bill them again: every period of every subscription that holds a moment
before ``T`` must be on a finalized invoice, and finalized invoices never change (design.md,
"Invoices"). Open periods, drafts and the grace period keep their raw events, so current usage,
invoices and rebuilds of open periods never miss one. A subscription that ended before ``T``
with ``on_termination_invoice: skip`` has a last partial period that is never invoiced: it is
as final as a finalized one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class ArchiveSubject:
    """One subscription row, as the archive rule needs it."""

    external_id: str
    starts: datetime
    ends: datetime | None
    finalized_until: datetime | None
    """The end of its last period on a finalized invoice (a termination's period ends at it)."""
    skip_termination_invoice: bool
    last_period_start: datetime
    """Start of the period holding its last moment before the horizon."""


def last_moment(subject: ArchiveSubject, before: datetime) -> datetime:
    """The subscription's last billable moment before ``before``."""
    if subject.ends is not None and subject.ends < before:
        return subject.ends
    return before - ONE_MICROSECOND


def unfinished(before: datetime, subjects: Iterable[ArchiveSubject]) -> list[str]:
    """External ids with a period before ``before`` that is not final yet (sorted, unique)."""
    blocking: set[str] = set()
    for subject in subjects:
        if subject.starts >= before:
            continue
        last = last_moment(subject, before)
        done = subject.finalized_until
        if done is not None and done >= last:
            continue
        ended_unbilled = subject.skip_termination_invoice and last == subject.ends
        if ended_unbilled and (subject.last_period_start <= subject.starts or (
                done is not None and done >= subject.last_period_start - ONE_MICROSECOND)):
            continue  # only the never-invoiced last partial period is left
        blocking.add(subject.external_id)
    return sorted(blocking)


def wholly_before(before: datetime, spans: Iterable[tuple[datetime, datetime]]) -> list[datetime]:
    """The starts of the spans ``[start, end)`` that end at or before ``before``, sorted: the
    months of snapshots that may leave (every moment in them is before the horizon, so every
    period they priced is final once ``unfinished`` finds nothing)."""
    return sorted(start for start, end in spans if end <= before)
