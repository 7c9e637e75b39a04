"""When an invoice may be finalized: grace days, the settle delay behind the ingest watermark,
and fees paid in advance that need no usage (``models.invoicing.finalization``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tallyflow.models.invoicing import finalization

END = datetime(2025, 2, 1, tzinfo=UTC) - timedelta(microseconds=1)  # a January period's end
AFTER = END + timedelta(microseconds=1)
H = timedelta(hours=1)
D = timedelta(days=1)
SETTLE = 2 * H


@pytest.mark.parametrize(
    ("at", "grace", "issued", "period_end", "watermark", "after", "due"),
    [
        # in arrears: due once the watermark has passed the end plus the settle delay
        (AFTER + 3 * H, 0 * D, None, END, END + SETTLE, AFTER, True),
        (AFTER + 3 * H, 0 * D, None, END, END + SETTLE - H, AFTER, False),
        (AFTER + 3 * H, 0 * D, None, END, None, AFTER, False),
        # ... and the grace days have passed
        (AFTER + D - timedelta(microseconds=1), 1 * D, None, END, AFTER + D, AFTER + D, False),
        (AFTER + D, 1 * D, None, END, AFTER + D, AFTER + D, True),
        # in advance only: due once issued plus grace, whatever the watermark
        (AFTER, 0 * D, AFTER, None, None, AFTER, True),
        (AFTER, 1 * D, AFTER, None, None, AFTER + D, False),
        # both: the later of the two moments, and the watermark still counts
        (AFTER + 3 * H, 0 * D, AFTER + 4 * H, END, END + SETTLE, AFTER + 4 * H, False),
        (AFTER + 4 * H, 0 * D, AFTER + 4 * H, END, END + SETTLE, AFTER + 4 * H, True),
    ],
)
def test_finalization(
    at: datetime, grace: timedelta, issued: datetime | None, period_end: datetime | None,
    watermark: datetime | None, after: datetime, due: bool,
) -> None:
    assert finalization(at, grace, issued, period_end, watermark, SETTLE) == (after, due)


def test_nothing_to_wait_for_is_due_at_once() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    finalize_after, due = finalization(at, D, None, None, None, SETTLE)
    assert due and finalize_after < at
