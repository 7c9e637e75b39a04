"""Lago's lifecycle rules, table-driven: statuses, the end that counts, when a termination is
refused, and the prorated subscription fee of a period a termination cut short."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tallyflow.models.invoicing import PeriodInput, subscription_fee_cents, trial_end
from tallyflow.models.lifecycle import (
    SubscriptionStatus,
    cancels,
    effective_end,
    plan_change,
    plan_change_refusal,
    row_in_force,
    status_at,
    termination_refusal,
    termination_step,
    termination_step_refusal,
    yearly_amount_cents,
)
from tallyflow.models.rating.periods import period_containing

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


PERIOD_END = datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
CHANGES = [
    # (id, old amount, old interval, new amount, new interval, upgrade?)
    ("dearer", "3100", "monthly", "6200", "monthly", True),
    ("same-price-is-an-upgrade", "3100", "monthly", "3100", "monthly", True),
    ("cheaper", "6200", "monthly", "3100", "monthly", False),
    ("yearly-cheaper-per-year", "3100", "monthly", "30000", "yearly", False),  # 37,200 a year
    ("yearly-dearer-per-year", "3100", "monthly", "40000", "yearly", True),
    ("weekly-vs-monthly", "1000", "weekly", "4000", "monthly", False),  # 52,000 vs 48,000
    ("free-to-paid", "0", "monthly", "100", "monthly", True),
]


@pytest.mark.parametrize(("old", "old_interval", "new", "new_interval", "upgrade"),
                         [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_upgrade_or_downgrade(old: str, old_interval: str, new: str, new_interval: str,
                              upgrade: bool) -> None:
    at = t("2026-03-15", 12)
    change = plan_change(at=at, old_amount_cents=D(old), old_interval=old_interval,
                         new_amount_cents=D(new), new_interval=new_interval,
                         period_end=PERIOD_END)
    assert change.upgrade is upgrade
    if upgrade:  # at once; the old row ends just before, so no instant is billed twice
        assert change.new_starts_at == at and change.old_ends_at == at - timedelta(microseconds=1)
    else:  # at the next period boundary
        assert change.old_ends_at == PERIOD_END
        assert change.new_starts_at == PERIOD_END + timedelta(microseconds=1)


def test_yearly_amounts() -> None:
    assert [yearly_amount_cents(D(100), i) for i in
            ("weekly", "monthly", "quarterly", "semiannual", "yearly")] == [
        D(5200), D(1200), D(400), D(200), D(100)]


CHANGE_REFUSALS = [
    # (id, at, ends_at, same plan, pending change, finalized until, message or None)
    ("ok", t("2026-03-10"), None, False, False, None, None),
    ("same-plan", t("2026-03-10"), None, True, False, None, "already on that plan"),
    ("pending-downgrade", t("2026-03-10"), None, False, True, None, "waiting"),
    ("before-start", t("2026-02-10"), None, False, False, None, "it starts at"),
    ("after-end", t("2026-03-10"), t("2026-03-05"), False, False, None, "it ended at"),
    ("finalized", t("2026-03-10"), None, False, False, t("2026-03-31"), "finalized invoice"),
]


@pytest.mark.parametrize(("at", "ends", "same", "pending", "finalized", "message"),
                         [c[1:] for c in CHANGE_REFUSALS], ids=[c[0] for c in CHANGE_REFUSALS])
def test_when_a_plan_change_is_refused(
    at: datetime, ends: datetime | None, same: bool, pending: bool,
    finalized: datetime | None, message: str | None,
) -> None:
    refusal = plan_change_refusal(external_id="sub", at=at, starts_at=START, ends_at=ends,
                                  same_plan=same, pending_change=pending,
                                  finalized_until=finalized)
    if message is None:
        assert refusal is None
    else:
        assert refusal is not None and message in refusal.message


_START = datetime(2025, 3, 15, tzinfo=UTC)
_US = timedelta(microseconds=1)


@pytest.mark.parametrize(("at", "now", "cancel"), [
    (_START - _US, _START - _US, True),   # asked just before the start, for now
    (_START - timedelta(days=3), _START - timedelta(days=5), True),  # an end before the start
    (_START, _START - _US, False),        # an end at the start: a planned end, not a cancel
    (_START + timedelta(days=1), _START - _US, False),  # a planned end after the start
    (_START - _US, _START, False),        # it has started: a termination (refused before it)
    (_START, _START, False),
])
def test_a_termination_before_the_start_of_a_pending_subscription_is_a_cancel(
    at: datetime, now: datetime, cancel: bool
) -> None:
    assert cancels(subscription_at=_START, at=at, now=now) is cancel


def test_the_row_in_force_is_the_one_whose_life_holds_the_moment() -> None:
    """A plan change's rows: the first lives to the change, the second from it; before any
    start the first (pending) row bills, after every end the last one started."""
    t = datetime(2025, 1, 1, tzinfo=UTC)
    first = ("first", t, t + timedelta(days=10))
    second = ("second", t + timedelta(days=10, microseconds=1), t + timedelta(days=20))
    rows = [first, second]

    def life(row: tuple[str, datetime, datetime | None]) -> tuple[datetime, datetime | None]:
        return row[1], row[2]

    assert row_in_force(rows, t - timedelta(days=1), life) is first
    assert row_in_force(rows, t, life) is first
    assert row_in_force(rows, t + timedelta(days=10), life) is first  # inclusive end
    assert row_in_force(rows, t + timedelta(days=11), life) is second
    assert row_in_force(rows, t + timedelta(days=30), life) is second
    assert row_in_force([], t, life) is None
    held = row_in_force([("open", t, None)], t + timedelta(days=400), life)
    assert held is not None and held[0] == "open"
BEGUN = t("2025-01-10")


@pytest.mark.parametrize(
    ("at", "terminated_at", "ending_at", "waiting", "ended", "planned", "cancel", "rerun"),
    [
        # a plain termination of a running subscription
        (t("2025-02-01"), None, None, False, None, None, False, False),
        # before its start, asked before it started: canceled, never terminated
        (t("2025-01-05"), None, None, False, None, None, True, False),
        # before its start, asked after it started: not a cancel (refused later)
        (t("2025-01-06"), None, None, False, None, None, False, False),
        # the same termination again: a rerun; another moment: neither (refused later)
        (t("2025-02-01"), t("2025-02-01"), None, False, t("2025-02-01"), None, False, True),
        (t("2025-02-02"), t("2025-02-01"), None, False, t("2025-02-01"), None, False, False),
        # a waiting downgrade's end is a planned end, not a termination
        (t("2025-02-01"), t("2025-03-01"), None, True, None, t("2025-03-01"), False, False),
        (t("2025-02-01"), t("2025-03-01"), t("2025-02-15"), True, None, t("2025-02-15"),
         False, False),
        # ending_at is a planned end too
        (t("2025-02-01"), None, t("2025-04-01"), False, None, t("2025-04-01"), False, False),
    ],
)
def test_termination_step(
    at: datetime, terminated_at: datetime | None, ending_at: datetime | None, waiting: bool,
    ended: datetime | None, planned: datetime | None, cancel: bool, rerun: bool,
) -> None:
    # asked on 2025-01-06 for that one row, on 2025-02-10 for the others
    now = t("2025-01-06") if at == t("2025-01-05") else t("2025-02-10")
    step = termination_step(at=at, now=now, subscription_at=BEGUN,
                            terminated_at=terminated_at, ending_at=ending_at,
                            downgrade_waiting=waiting)
    assert (step.ended, step.planned, step.cancel, step.rerun) == (ended, planned, cancel, rerun)


def test_a_termination_recorded_elsewhere_is_finished_by_rerunning_it() -> None:
    step = termination_step(at=t("2025-02-02"), now=t("2025-02-10"), subscription_at=BEGUN,
                            terminated_at=t("2025-02-01"), ending_at=None,
                            downgrade_waiting=False)
    refusal = termination_step_refusal(step, external_id="s1", at=t("2025-02-02"),
                                       subscription_at=BEGUN, finalized_until=None)
    assert refusal is not None
    assert "already terminated" in refusal.message
    assert refusal.hint == (
        f"to finish that termination, rerun with --at {t('2025-02-01').isoformat()}"
    )


def test_a_waiting_downgrade_does_not_block_an_earlier_termination() -> None:
    step = termination_step(at=t("2025-02-01"), now=t("2025-02-10"), subscription_at=BEGUN,
                            terminated_at=t("2025-03-01"), ending_at=None,
                            downgrade_waiting=True)
    assert termination_step_refusal(step, external_id="s1", at=t("2025-02-01"),
                                    subscription_at=BEGUN, finalized_until=None) is None
    later = termination_step(at=t("2025-03-02"), now=t("2025-02-10"), subscription_at=BEGUN,
                             terminated_at=t("2025-03-01"), ending_at=None,
                             downgrade_waiting=True)
    refusal = termination_step_refusal(later, external_id="s1", at=t("2025-03-02"),
                                       subscription_at=BEGUN, finalized_until=None)
    assert refusal is not None and "ending_at" in refusal.message
    assert refusal.hint.startswith("a termination can only end")
