"""The archive rule: only history whose every period is final may leave PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tallyflow.models.archive import ArchiveSubject, unfinished

US = timedelta(microseconds=1)
MAR, APR, MAY = (datetime(2025, m, 1, tzinfo=UTC) for m in (3, 4, 5))


def subject(*, starts: datetime = MAR, ends: datetime | None = None,
            until: datetime | None = None, skip: bool = False,
            last_start: datetime = MAR) -> ArchiveSubject:
    return ArchiveSubject("sub", starts, ends, until, skip, last_start)


@pytest.mark.parametrize(("case", "before", "blocked"), [
    (subject(), APR, True),                                   # March open: nothing finalized
    (subject(until=APR - US), APR, False),                    # March finalized, horizon at its end
    (subject(until=APR - US), APR + US, True),                # one microsecond into open April
    (subject(until=APR - US, last_start=APR), MAY, True),     # April still open
    (subject(until=MAY - US, last_start=APR), MAY, False),
    (subject(starts=APR), APR, False),                        # starts at it: nothing before
    (subject(starts=MAY), APR, False),
    # ended before the horizon: its last period ends at the end
    (subject(ends=datetime(2025, 3, 20, tzinfo=UTC), until=datetime(2025, 3, 20, tzinfo=UTC)),
     APR, False),
    (subject(ends=datetime(2025, 3, 20, tzinfo=UTC)), APR, True),  # termination invoice a draft
    # skip: the last partial period is never invoiced, the ones before it must be final
    (subject(ends=datetime(2025, 3, 20, tzinfo=UTC), skip=True), APR, False),
    (subject(ends=datetime(2025, 4, 20, tzinfo=UTC), skip=True, last_start=APR), MAY, True),
    (subject(ends=datetime(2025, 4, 20, tzinfo=UTC), skip=True, last_start=APR,
             until=APR - US), MAY, False),
    # ends after the horizon: an ordinary open period
    (subject(ends=datetime(2025, 4, 20, tzinfo=UTC), skip=True, until=MAR), APR, True),
])
def test_which_subscriptions_block_a_horizon(
    case: ArchiveSubject, before: datetime, blocked: bool
) -> None:
    assert unfinished(before, [case]) == (["sub"] if blocked else [])


def test_blocking_ids_are_sorted_and_unique() -> None:
    rows = [ArchiveSubject(x, MAR, None, None, False, MAR) for x in ("b", "a", "b")]
    assert unfinished(APR, rows) == ["a", "b"]
