"""Lago's lifecycle rules, table-driven: statuses, the end that counts, when a termination is
refused, and the prorated subscription fee of a period a termination cut short."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from models.invoicing import PeriodInput, subscription_fee_cents, trial_end
from models.lifecycle import (
    SubscriptionStatus,
    effective_end,
    status_at,
    termination_refusal,
)
from models.rating.periods import period_containing

D = Decimal


def t(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


STATUSES = [
    # (id, start, end, at, status): both bounds inclusive, as events count
    ("before-start", t("2026-03-10"), None, t("2026-03-09", 23), "pending"),
    ("at-start", t("2026-03-10"), None, t("2026-03-10"), "active"),
    ("no-end", t("2026-03-10"), None, t("2030-01-01"), "active"),
    ("at-end", t("2026-03-10"), t("2026-03-20"), t("2026-03-20"), "active"),
    ("after-end", t("2026-03-10"), t("2026-03-20"), t("2026-03-20", 1), "terminated"),
]


@pytest.mark.parametrize(("start", "end", "at", "status"), [c[1:] for c in STATUSES],
                         ids=[c[0] for c in STATUSES])
def test_status(start: datetime, end: datetime | None, at: datetime, status: str) -> None:
    assert status_at(start, end, at) is SubscriptionStatus(status)


@pytest.mark.parametrize(("terminated", "ending", "expected"), [
    (None, None, None),
    (t("2026-03-10"), None, t("2026-03-10")),
    (None, t("2026-04-01"), t("2026-04-01")),
    (t("2026-03-10"), t("2026-04-01"), t("2026-03-10")),  # terminated before the planned end
])
def test_the_earlier_end_counts(terminated: datetime | None, ending: datetime | None,
                                expected: datetime | None) -> None:
    assert effective_end(terminated, ending) == expected


START = t("2026-03-01")
REFUSALS = [
    # (id, at, terminated_at, ending_at, finalized_until, expected message part or None)
    ("ok-mid-period", t("2026-03-10"), None, None, None, None),
    ("ok-at-start", START, None, None, None, None),
    ("before-start", t("2026-02-28"), None, None, None, "it starts at"),
    ("already-terminated", t("2026-03-10"), t("2026-03-05"), None, None, "already terminated"),
    ("in-finalized-period", t("2026-03-31", 23), None, None, t("2026-03-31", 23),
     "on a finalized invoice"),
    ("after-finalized-period", t("2026-04-02"), None, None, t("2026-03-31", 23), None),
    ("earlier-than-ending-at", t("2026-03-10"), None, t("2026-03-20"), None, None),
    ("later-than-ending-at", t("2026-03-21"), None, t("2026-03-20"), None, "already ends at"),
]


@pytest.mark.parametrize(("at", "terminated", "ending", "finalized", "message"),
                         [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_when_a_termination_is_refused(
    at: datetime, terminated: datetime | None, ending: datetime | None,
    finalized: datetime | None, message: str | None,
) -> None:
    refusal = termination_refusal(external_id="sub", at=at, subscription_at=START,
                                  terminated_at=terminated, ending_at=ending,
                                  finalized_until=finalized)
    if message is None:
        assert refusal is None
    else:
        assert refusal is not None and message in refusal.message and refusal.hint


def _terminated_period(start: datetime, end: datetime, amount: str, tz: str = "UTC",
                       trial_days: str | None = None) -> PeriodInput:
    period = period_containing(end, "monthly", "calendar", start, tz, end)
    zone = ZoneInfo(tz)
    ends = trial_end(start, D(trial_days) if trial_days else None)
    return PeriodInput(
        external_subscription_id="sub", plan_code="pro", plan_name="Pro",
        plan_invoice_display_name=None, amount_cents=D(amount), trial_end=ends,
        trial_end_date=ends.astimezone(zone).date() if ends else None,
        minimum_commitment_cents=None, plan_tax_codes=(), start_date=period.start_date,
        end_date=period.end_date, from_date=period.from_datetime.astimezone(zone).date(),
        to_date=period.to_datetime.astimezone(zone).date(),
        from_datetime=period.from_datetime, to_datetime=period.to_datetime, charges=(),
    )


TERMINATION_FEES = [
    # (id, start, terminated_at, amount_cents, trial days, expected precise cents)
    # March has 31 days: 3100 / 31 = 100 a day, days from the period start to the end's day
    ("ten-days", t("2026-01-01"), t("2026-03-10", 15), "3100", None, "1000"),
    ("first-day", t("2026-01-01"), t("2026-03-01", 1), "3100", None, "100"),
    ("last-day-is-a-full-period", t("2026-01-01"), t("2026-03-31", 23), "3100", None, "3100"),
    ("started-and-ended-inside", t("2026-03-05"), t("2026-03-20", 12), "3100", None, "1600"),
    ("uneven-day-price", t("2026-01-01"), t("2026-03-10", 15), "1000", None,
     str(D(1000) / D(31) * 10)),
    ("trial-covers-it", t("2026-03-05"), t("2026-03-10", 12), "3100", "30", "0"),
    # a 10-day trial from 1 March ends on 11 March: 11..20 March = 10 days
    ("trial-ends-inside", t("2026-03-01"), t("2026-03-20", 12), "3100", "10", "1000"),
]


@pytest.mark.parametrize(("start", "end", "amount", "trial", "expected"),
                         [c[1:] for c in TERMINATION_FEES], ids=[c[0] for c in TERMINATION_FEES])
def test_a_terminated_period_pays_its_days(
    start: datetime, end: datetime, amount: str, trial: str | None, expected: str
) -> None:
    fee = subscription_fee_cents(_terminated_period(start, end, amount, trial_days=trial))
    assert abs(fee - D(expected)) < D("1e-20"), fee
