"""Billing periods as calendar dates in the customer's timezone, converted to UTC instants.

Lago reasons in local calendar days: a monthly period in America/New_York is 1 March 00:00 to
31 March 23:59:59.999999 *New York time*, whatever DST does in between. Dates are computed
first, then each boundary is turned into an aware UTC datetime, so periods tile time with no
gap or overlap (a period ends one microsecond before the next one starts).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from tallyflow.models.rating.aggregation import ProrationWindow, TimeWindow, epoch_seconds

ONE_MICROSECOND: Final = timedelta(microseconds=1)


class Interval(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMIANNUAL = "semiannual"
    YEARLY = "yearly"


# The longest a period of each interval can last, DST included: a period is at most one
# interval of local calendar days (a first or last period is shorter), and a local day is at
# most 25 hours. Readers of snapshot history use it to bound the ``as_of`` they scan (a snapshot
# is taken inside its period), which is what keeps the hourly report flat in history.
LONGEST_PERIOD: Final = {
    "weekly": timedelta(days=7, hours=1),
    "monthly": timedelta(days=31, hours=1),
    "quarterly": timedelta(days=92, hours=1),
    "semiannual": timedelta(days=184, hours=1),
    "yearly": timedelta(days=366, hours=1),
}


def longest_period(intervals: Iterable[str]) -> timedelta | None:
    """The longest period any of these plan intervals can have; None for an unknown one (the
    reader then scans without a bound rather than miss a snapshot)."""
    spans = [LONGEST_PERIOD.get(i) for i in intervals]
    if not spans or any(span is None for span in spans):
        return None
    return max(span for span in spans if span is not None)


class BillingTime(StrEnum):
    CALENDAR = "calendar"
    ANNIVERSARY = "anniversary"


# Months in each monthly-based interval (the wallets' recurring top-ups count them too).
INTERVAL_MONTHS: Final[dict[str, int]] = {
    Interval.MONTHLY: 1,
    Interval.QUARTERLY: 3,
    Interval.SEMIANNUAL: 6,
    Interval.YEARLY: 12,
}

# Lago's ``bill_charges_monthly`` (``Plan#charges_billed_in_monthly_split_intervals?``): a
# yearly or semiannual plan that bills its charges every month and its subscription fee once a
# period. Its usage is rated, deducted and invoiced per month (the charges' periods); the fee
# goes on the invoice of the month that ends the plan's period (models/invoicing).
SPLIT_INTERVALS: Final = (Interval.YEARLY.value, Interval.SEMIANNUAL.value)


def charges_interval(interval: str, bill_charges_monthly: bool | None) -> str:
    """The interval a plan's charges are billed (and its usage rated) in."""
    if bill_charges_monthly and interval in SPLIT_INTERVALS:
        return Interval.MONTHLY.value
    return interval


# The same rule in SQL, over the plan row ``p`` (its document is the plan as applied).
CHARGES_INTERVAL_SQL: Final = (
    "case when p.interval in ('yearly', 'semiannual')"
    " and coalesce((p.document->>'bill_charges_monthly')::boolean, false)"
    " then 'monthly' else p.interval end"
)


@dataclass(frozen=True)
class BillingPeriod:
    """One billing period of a subscription.

    ``start_date``/``end_date`` are the nominal local calendar days; ``period_start`` and
    ``period_end`` their UTC instants (inclusive end, 23:59:59.999999 local).
    ``from_datetime``/``to_datetime`` are bounded by the subscription start and termination
    (the first period starts when the subscription does); ``charges_from``/``charges_to`` are
    the window in which events count for charges (same bounds: usage is billed in arrears for
    the period it happened in).
    """

    interval: Interval
    billing_time: BillingTime
    timezone: str
    start_date: date
    end_date: date
    period_start: datetime
    period_end: datetime
    from_datetime: datetime
    to_datetime: datetime
    charges_from: datetime
    charges_to: datetime

    @property
    def charges_end_exclusive(self) -> datetime:
        return self.charges_to + ONE_MICROSECOND

    def contains(self, moment: datetime) -> bool:
        """Whether an event at ``moment`` counts for this period's charges (bounds inclusive)."""
        return self.charges_from <= moment <= self.charges_to

    def weighted_window(self) -> TimeWindow:
        """Window for weighted_sum: the charged span, divided by the full nominal period."""
        length = period_length_seconds(self)
        return TimeWindow(self.charges_from, self.charges_end_exclusive, length)


def period_length_seconds(period: BillingPeriod) -> Decimal:
    """Exact length of the full nominal period in seconds (a DST month is an hour off 30/31 d).

    Lago divides by whole days; Tallyflow uses elapsed seconds so that a constant level over a
    whole period averages to exactly that level.
    """
    end = period.period_end + ONE_MICROSECOND
    return epoch_seconds(end) - epoch_seconds(period.period_start)


def prorata_days(period: BillingPeriod) -> Decimal:
    """Share of the period's local days the subscription covered (for min_amount_cents)."""
    zone = ZoneInfo(period.timezone)
    first = period.charges_from.astimezone(zone).date()
    last = period.charges_to.astimezone(zone).date()
    covered = (last - first).days + 1
    full = (period.end_date - period.start_date).days + 1
    return Decimal(covered) / Decimal(full)


def proration_window(period: BillingPeriod) -> ProrationWindow:
    """The local days a prorated charge weighs its units over: the charged span, from the first
    charged day (a plan change's row starts at the change; units from before it are carried,
    as Lago's persisted units) to the last (the termination day), divided by the days of the
    full nominal period even when the subscription starts or ends inside it (Lago)."""
    zone = ZoneInfo(period.timezone)
    return ProrationWindow(
        start=period.charges_from.astimezone(zone).date(),
        last=period.charges_to.astimezone(zone).date(),
        days=(period.end_date - period.start_date).days + 1,
        covered=prorata_days(period),
    )


def period_containing(
    at: datetime,
    interval: Interval | str,
    billing_time: BillingTime | str,
    subscription_at: datetime,
    timezone: str | None = None,
    terminated_at: datetime | None = None,
    anchor_at: datetime | None = None,
) -> BillingPeriod:
    """The billing period of a subscription that contains the instant ``at``.

    ``anchor_at`` is where anniversary periods are counted from when it is not the start: a
    plan change's subscription keeps the original ``subscription_at`` as its anchor, as Lago's
    does, and starts at the change (``subscription_at`` here).

    Raises ``ValueError`` when ``at`` is before the subscription start or after its
    termination (no period of this subscription holds it).
    """
    _require_aware(at, "at")
    _require_aware(subscription_at, "subscription_at")
    if at < subscription_at:
        raise ValueError("at is before the subscription started")
    if terminated_at is not None:
        _require_aware(terminated_at, "terminated_at")
        if at > terminated_at:
            raise ValueError("at is after the subscription was terminated")
    kind, mode = Interval(interval), BillingTime(billing_time)
    zone_name = timezone or "UTC"
    zone = ZoneInfo(zone_name)
    anchor = (anchor_at or subscription_at).astimezone(zone).date()
    start, end = _local_dates(at.astimezone(zone).date(), kind, mode, anchor)
    return _build(kind, mode, zone_name, start, end, subscription_at, terminated_at)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _local_dates(
    day: date, interval: Interval, mode: BillingTime, anchor: date
) -> tuple[date, date]:
    if interval is Interval.WEEKLY:
        return _weekly(day, mode, anchor)
    months = INTERVAL_MONTHS[interval]
    if mode is BillingTime.CALENDAR:
        return _calendar_months(day, months)
    return _anniversary_months(day, months, anchor)


def _weekly(day: date, mode: BillingTime, anchor: date) -> tuple[date, date]:
    """Calendar weeks start on Monday (Rails ``beginning_of_week``); anniversary weeks on the
    subscription's weekday."""
    first_weekday = 0 if mode is BillingTime.CALENDAR else anchor.weekday()
    start = day - timedelta(days=(day.weekday() - first_weekday) % 7)
    return start, start + timedelta(days=6)


def _calendar_months(day: date, months: int) -> tuple[date, date]:
    first_month = ((day.month - 1) // months) * months + 1
    start = date(day.year, first_month, 1)
    return start, add_months(start, months, 1) - timedelta(days=1)


def _anniversary_months(day: date, months: int, anchor: date) -> tuple[date, date]:
    """Periods start on the anchor's day of month, clamped to short months (31 -> 28/29 Feb).

    Each start is clamped from the anchor (not from the previous start), so a 31st
    subscription goes back to the 31st after February; a period ends the day before the next.
    """
    elapsed = (day.year - anchor.year) * 12 + day.month - anchor.month
    index = elapsed // months
    start = add_months(anchor, index * months, anchor.day)
    if start > day:
        index -= 1
        start = add_months(anchor, index * months, anchor.day)
    following = add_months(anchor, (index + 1) * months, anchor.day)
    return start, following - timedelta(days=1)


def add_months(origin: date, months: int, day: int) -> date:
    """``origin`` moved by ``months`` months, on ``day`` clamped to the month's length: the one
    month arithmetic (billing periods here, wallet top-up intervals in models/wallets.py)."""
    total = origin.year * 12 + origin.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _local_instant(day: date, zone: ZoneInfo) -> datetime:
    """Local midnight of ``day`` as a UTC instant (a skipped midnight resolves forward)."""
    local = datetime.combine(day, time.min, tzinfo=zone)
    return local.astimezone(UTC)


def _build(
    interval: Interval,
    mode: BillingTime,
    zone_name: str,
    start: date,
    end: date,
    subscription_at: datetime,
    terminated_at: datetime | None,
) -> BillingPeriod:
    zone = ZoneInfo(zone_name)
    period_start = _local_instant(start, zone)
    period_end = _local_instant(end + timedelta(days=1), zone) - ONE_MICROSECOND
    bounded_from = max(period_start, subscription_at.astimezone(UTC))
    bounded_to = period_end
    if terminated_at is not None:
        bounded_to = min(period_end, terminated_at.astimezone(UTC))
    return BillingPeriod(
        interval=interval,
        billing_time=mode,
        timezone=zone_name,
        start_date=start,
        end_date=end,
        period_start=period_start,
        period_end=period_end,
        from_datetime=bounded_from,
        to_datetime=bounded_to,
        charges_from=bounded_from,
        charges_to=bounded_to,
    )
