"""Lago's projection arithmetic (models/rating/projection.py): days counted as
``Utils::Datetime.date_diff_with_timezone`` counts them, the float ratio, units rounded half up
to 2 decimals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tallyflow.models.rating.projection import lago_days, period_ratio, projector

START = datetime(2025, 3, 1, 5, tzinfo=UTC)  # local midnight in New York (EST)
END = datetime(2025, 4, 1, 3, 59, 59, 999999, tzinfo=UTC)  # the last instant of March (EDT)


@pytest.mark.parametrize(
    ("start", "end", "zone", "days"),
    [
        (
            datetime(2025, 3, 1, tzinfo=UTC),
            datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC),
            "UTC",
            31,
        ),
        (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 11, 12, tzinfo=UTC), "UTC", 11),
        (
            datetime(2025, 3, 1, tzinfo=UTC),
            datetime(2025, 3, 11, tzinfo=UTC),
            "UTC",
            11,
        ),  # midnight
        (START, END, "America/New_York", 31),  # across the change to summer time
        (START, datetime(2025, 3, 10, 4, tzinfo=UTC), "America/New_York", 10),  # local midnight
        (START, datetime(2025, 3, 10, 3, 59, tzinfo=UTC), "America/New_York", 9),
    ],
)
def test_days_as_lago_counts_them(start: datetime, end: datetime, zone: str, days: int) -> None:
    assert lago_days(start, end, zone) == days


@pytest.mark.parametrize(
    ("now", "ratio"),
    [
        (datetime(2025, 2, 28, tzinfo=UTC), Decimal(0)),  # before the period
        (END, Decimal(1)),  # ended
        (datetime(2025, 3, 11, 12, tzinfo=UTC), Decimal(repr(11 / 31))),
        # the first instant, a local midnight, counts its day (Lago adds a second)
        (datetime(2025, 3, 1, 5, tzinfo=UTC), Decimal(repr(1 / 31))),
    ],
)
def test_period_ratio(now: datetime, ratio: Decimal) -> None:
    assert period_ratio(START, END, now, "America/New_York") == ratio


@pytest.mark.parametrize(
    ("ratio", "units", "projected"),
    [
        (Decimal("0.3333333333333333"), Decimal(10), Decimal("30.00")),
        (Decimal("0.5"), Decimal("1.005"), Decimal("2.01")),
        (Decimal("0.3548387096774194"), Decimal(7), Decimal("19.73")),  # 7 / (11/31), half up
        (Decimal(1), Decimal("2.345"), Decimal("2.35")),
        (Decimal(0), Decimal(5), Decimal(0)),
    ],
)
def test_projected_units(ratio: Decimal, units: Decimal, projected: Decimal) -> None:
    assert projector(ratio)(units) == projected
