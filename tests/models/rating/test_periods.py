from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallyflow.models.rating.aggregation import EventPoint, WeightedSumState
from tallyflow.models.rating.periods import (
    LONGEST_PERIOD,
    BillingPeriod,
    Interval,
    longest_period,
    period_containing,
    period_length_seconds,
    prorata_days,
)
from tallyflow.models.rating.pricing import SubscriptionInfo

NY = ZoneInfo("America/New_York")
UTC_START = datetime(2020, 1, 1, tzinfo=UTC)


def local(*args: int, zone: ZoneInfo = NY) -> datetime:
    return datetime(*args, tzinfo=zone)


def dates(period) -> tuple[date, date]:
    return period.start_date, period.end_date


def test_new_york_last_second_of_month_is_in_the_month() -> None:
    sub = local(2024, 1, 1)
    inside = period_containing(
        local(2024, 3, 31, 23, 59, 59), "monthly", "calendar", sub, "America/New_York"
    )
    after = period_containing(
        local(2024, 4, 1, 0, 0, 0), "monthly", "calendar", sub, "America/New_York"
    )
    assert dates(inside) == (date(2024, 3, 1), date(2024, 3, 31))
    assert dates(after) == (date(2024, 4, 1), date(2024, 4, 30))
    assert inside.period_end == datetime(2024, 4, 1, 3, 59, 59, 999999, tzinfo=UTC)
    assert after.period_start == datetime(2024, 4, 1, 4, tzinfo=UTC)
    assert inside.contains(local(2024, 3, 31, 23, 59, 59))
    assert not inside.contains(local(2024, 4, 1, 0, 0, 0))


@pytest.mark.parametrize(
    ("month", "utc_start_hour", "seconds"),
    [
        (3, 5, 31 * 86400 - 3600),  # spring forward: EST start, 23-hour day
        (11, 4, 30 * 86400 + 3600),  # fall back: EDT start, 25-hour day
        (6, 4, 30 * 86400),
    ],
)
def test_dst_months(month: int, utc_start_hour: int, seconds: int) -> None:
    period = period_containing(
        local(2024, month, 15), "monthly", "calendar", local(2024, 1, 1), "America/New_York"
    )
    assert period.period_start == datetime(2024, month, 1, utc_start_hour, tzinfo=UTC)
    assert period_length_seconds(period) == seconds
    # a constant level over a DST month averages to exactly that level
    assert WeightedSumState.empty().result(period.weighted_window(), D(7)) == 7


@pytest.mark.parametrize(
    ("subscription", "at", "expected"),
    [
        # 31st anchor clamps to short months and returns to the 31st afterwards
        (date(2024, 1, 31), date(2024, 2, 15), (date(2024, 1, 31), date(2024, 2, 28))),
        (date(2024, 1, 31), date(2024, 2, 29), (date(2024, 2, 29), date(2024, 3, 30))),
        (date(2024, 1, 31), date(2024, 3, 31), (date(2024, 3, 31), date(2024, 4, 29))),
        (date(2024, 1, 31), date(2024, 4, 30), (date(2024, 4, 30), date(2024, 5, 30))),
        (date(2023, 1, 31), date(2023, 2, 28), (date(2023, 2, 28), date(2023, 3, 30))),
        (date(2023, 1, 31), date(2023, 3, 15), (date(2023, 2, 28), date(2023, 3, 30))),
        (date(2023, 1, 31), date(2023, 2, 27), (date(2023, 1, 31), date(2023, 2, 27))),
        (date(2024, 1, 15), date(2024, 1, 15), (date(2024, 1, 15), date(2024, 2, 14))),
        (date(2024, 1, 15), date(2024, 12, 20), (date(2024, 12, 15), date(2025, 1, 14))),
    ],
)
def test_monthly_anniversary_clamping(
    subscription: date, at: date, expected: tuple[date, date]
) -> None:
    sub = datetime.combine(subscription, datetime.min.time(), tzinfo=UTC)
    moment = datetime.combine(at, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    assert dates(period_containing(moment, "monthly", "anniversary", sub)) == expected


@pytest.mark.parametrize(
    ("interval", "mode", "subscription", "at", "expected"),
    [
        ("yearly", "anniversary", date(2024, 2, 29), date(2025, 3, 1),
         (date(2025, 2, 28), date(2026, 2, 27))),
        ("yearly", "anniversary", date(2024, 2, 29), date(2028, 2, 29),
         (date(2028, 2, 29), date(2029, 2, 27))),
        ("yearly", "calendar", date(2024, 2, 29), date(2024, 7, 1),
         (date(2024, 1, 1), date(2024, 12, 31))),
        ("quarterly", "calendar", date(2024, 1, 1), date(2024, 8, 15),
         (date(2024, 7, 1), date(2024, 9, 30))),
        ("quarterly", "anniversary", date(2023, 11, 30), date(2024, 3, 15),
         (date(2024, 2, 29), date(2024, 5, 29))),
        ("quarterly", "anniversary", date(2023, 11, 30), date(2024, 5, 30),
         (date(2024, 5, 30), date(2024, 8, 29))),
        ("semiannual", "calendar", date(2024, 1, 1), date(2024, 8, 15),
         (date(2024, 7, 1), date(2024, 12, 31))),
        ("semiannual", "anniversary", date(2024, 8, 31), date(2025, 2, 28),
         (date(2025, 2, 28), date(2025, 8, 30))),
        # calendar weeks start on Monday; 2024-03-13 is a Wednesday
        ("weekly", "calendar", date(2024, 3, 13), date(2024, 3, 17),
         (date(2024, 3, 11), date(2024, 3, 17))),
        ("weekly", "calendar", date(2024, 3, 13), date(2024, 3, 18),
         (date(2024, 3, 18), date(2024, 3, 24))),
        ("weekly", "anniversary", date(2024, 3, 13), date(2024, 3, 19),
         (date(2024, 3, 13), date(2024, 3, 19))),
        ("weekly", "anniversary", date(2024, 3, 13), date(2024, 3, 20),
         (date(2024, 3, 20), date(2024, 3, 26))),
    ],
)  # fmt: skip
def test_intervals(
    interval: str, mode: str, subscription: date, at: date, expected: tuple[date, date]
) -> None:
    sub = datetime.combine(subscription, datetime.min.time(), tzinfo=UTC)
    moment = datetime.combine(at, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    assert dates(period_containing(moment, interval, mode, sub)) == expected


def test_first_calendar_period_starts_at_subscription() -> None:
    sub = local(2024, 3, 13, 15, 30)
    period = period_containing(local(2024, 3, 20), "monthly", "calendar", sub, "America/New_York")
    assert period.from_datetime == sub.astimezone(UTC)
    assert period.charges_from == sub.astimezone(UTC)
    assert period.period_start == datetime(2024, 3, 1, 5, tzinfo=UTC)
    assert prorata_days(period) == D(19) / D(31)


def test_anniversary_anchor_is_the_local_subscription_day() -> None:
    # 02:00 UTC on 1 March is still 29 February in New York
    sub = datetime(2024, 3, 1, 2, tzinfo=UTC)
    period = period_containing(
        datetime(2024, 3, 29, 12, tzinfo=UTC), "monthly", "anniversary", sub, "America/New_York"
    )
    assert dates(period) == (date(2024, 3, 29), date(2024, 4, 28))


def test_termination_stops_charges() -> None:
    sub = local(2024, 1, 1)
    terminated = local(2024, 3, 10, 12)
    period = period_containing(
        local(2024, 3, 5), "monthly", "calendar", sub, "America/New_York", terminated
    )
    assert period.charges_to == terminated.astimezone(UTC)
    assert period.to_datetime == terminated.astimezone(UTC)
    assert period.contains(terminated) and not period.contains(terminated + timedelta(seconds=1))
    assert prorata_days(period) == D(10) / D(31)
    with pytest.raises(ValueError, match="terminated"):
        period_containing(local(2024, 3, 11), "monthly", "calendar", sub, None, terminated)
    with pytest.raises(ValueError, match="before"):
        period_containing(local(2023, 12, 31), "monthly", "calendar", sub)
    with pytest.raises(ValueError, match="timezone-aware"):
        period_containing(datetime(2024, 1, 2), "monthly", "calendar", sub)


def test_weighted_sum_in_terminated_period_prorates() -> None:
    sub = datetime(2024, 6, 1, tzinfo=UTC)
    terminated = datetime(2024, 6, 16, tzinfo=UTC) - timedelta(microseconds=1)
    period = period_containing(sub, "monthly", "calendar", sub, None, terminated)
    state = WeightedSumState.empty().add(EventPoint(sub, 0, D(10)))
    assert state.result(period.weighted_window()) == 5


def periods_from(
    interval: str, billing_time: str, subscription_at: datetime, until: datetime, zone: str
) -> list[BillingPeriod]:
    """Every period from the start to ``until``, as the rating reads them."""
    subscription = SubscriptionInfo(
        id=1, external_id="sub", plan_id=1, interval=interval, billing_time=billing_time,
        subscription_at=subscription_at, terminated_at=None, timezone=zone, currency="USD",
        catalog_at=subscription_at,
    )
    return subscription.periods_between(subscription_at, until)


def test_periods_tile_time() -> None:
    sub = local(2024, 1, 31, 10)
    periods = periods_from("monthly", "anniversary", sub, local(2025, 1, 31), "America/New_York")
    assert len(periods) == 13
    for before, after in zip(periods, periods[1:], strict=False):
        assert before.period_end + timedelta(microseconds=1) == after.period_start
        assert before.end_date + timedelta(days=1) == after.start_date


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(Interval)),
    st.sampled_from(["calendar", "anniversary"]),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
    st.integers(0, 5 * 365 * 86400),
    st.integers(0, 3 * 365 * 86400),
)
def test_period_contains_its_instant(
    interval: Interval, mode: str, zone: str, start_offset: int, offset: int
) -> None:
    sub = UTC_START + timedelta(seconds=start_offset)
    at = sub + timedelta(seconds=offset)
    period = period_containing(at, interval, mode, sub, zone)
    assert period.period_start <= at <= period.period_end
    assert period.period_end - period.period_start < LONGEST_PERIOD[interval]
    assert period.contains(at)
    assert period.start_date <= at.astimezone(ZoneInfo(zone)).date() <= period.end_date
    following = period_containing(
        period.period_end + timedelta(microseconds=1), interval, mode, sub, zone
    )
    assert following.start_date == period.end_date + timedelta(days=1)


@pytest.mark.parametrize(
    ("intervals", "longest"),
    [
        ([], None),
        (["monthly"], timedelta(days=31, hours=1)),
        (["weekly", "monthly"], timedelta(days=31, hours=1)),
        (["monthly", "yearly", "quarterly"], timedelta(days=366, hours=1)),
        (["monthly", "fortnightly"], None),  # unknown: no bound rather than a missed snapshot
    ],
)
def test_longest_period(intervals: list[str], longest: timedelta | None) -> None:
    assert longest_period(intervals) == longest


@pytest.mark.parametrize(
    ("interval", "start", "zone"),
    [
        ("monthly", datetime(2025, 10, 1, tzinfo=UTC), "America/New_York"),  # 31 days + 1 h
        ("quarterly", datetime(2025, 10, 1, tzinfo=UTC), "Europe/Paris"),
        ("semiannual", datetime(2024, 7, 1, tzinfo=UTC), "America/New_York"),
        ("yearly", datetime(2024, 1, 1, tzinfo=UTC), "Australia/Lord_Howe"),  # a leap year
        ("weekly", datetime(2025, 11, 1, tzinfo=UTC), "America/New_York"),  # DST ends inside
    ],
)
def test_the_longest_periods_fit_their_bound(interval: str, start: datetime, zone: str) -> None:
    longest = max(
        (p.period_end - p.period_start
         for p in periods_from(interval, "calendar", start - timedelta(days=800),
                               start + timedelta(days=800), zone)),
    )
    assert longest < LONGEST_PERIOD[interval]
    assert longest > LONGEST_PERIOD[interval] - timedelta(days=2)
