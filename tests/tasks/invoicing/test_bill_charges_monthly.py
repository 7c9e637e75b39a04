"""``bill_charges_monthly`` on a yearly plan, as Lago bills it: the charges every month, the
subscription fee once a year, on the invoice of the month that ends the year
(app/services/invoices/calculate_fees_service.rb ``should_create_yearly_subscription_fee?``;
app/services/subscriptions/dates/yearly_service.rb: charges boundaries from the monthly service;
spec/services/invoices/calculate_fees_service_spec.rb "when plan has bill_charges_monthly").

A $120 yearly plan (calendar, New York) started on 1 November 2025; $8 of usage on 10 November
and on 10 December."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tallyflow.tasks.usage import current_usage
from tests.tasks.invoicing.test_invoicing import (
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)
from tests.tasks.rating_fixtures import SUB

DECEMBER = datetime(2025, 12, 1, 10, tzinfo=UTC)
NEW_YEAR = datetime(2026, 1, 1, 10, tzinfo=UTC)


def _fees(invoice: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    return [(f["item"]["type"], f["amount_cents"], f["from_date"], f["to_date"])
            for f in invoice["fees"]]


def test_yearly_plan_bills_charges_monthly_and_its_fee_at_the_year_end(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, start="2025-11-01T04:00:00Z",
            plan={"interval": "yearly", "amount_cents": 12000, "bill_charges_monthly": True})
    usage_events(engine, tmp_path, datetime(2025, 11, 10, 12, tzinfo=UTC), prefix="n")
    usage_events(engine, tmp_path, datetime(2025, 12, 10, 12, tzinfo=UTC), prefix="d")
    # current usage is the month's (Lago: the charges' boundaries)
    usage = current_usage(engine, SUB, datetime(2025, 12, 15, tzinfo=UTC))
    assert (usage["from_datetime"], usage["amount_cents"]) == ("2025-12-01T05:00:00Z", 800)
    ingested_until(engine, NEW_YEAR)
    hour(engine, DECEMBER)
    hour(engine, NEW_YEAR)
    by_day = {i["issuing_date"]: _fees(i) for i in invoices(engine)}
    november = ("2025-11-01T04:00:00Z", "2025-12-01T04:59:59Z")
    december = ("2025-12-01T05:00:00Z", "2026-01-01T04:59:59Z")
    # November: its charges only, no subscription fee
    assert by_day["2025-12-01"] == [("charge", 200, *november), ("charge", 600, *november)]
    # the year's end: December's charges and the fee of the year, 1 November to 31 December
    # at the single-day price, 61 / 365 x $120 = $20.05
    assert by_day["2026-01-01"] == [
        ("subscription", 2005, "2025-11-01T04:00:00Z", "2026-01-01T04:59:59Z"),
        ("charge", 200, *december), ("charge", 600, *december),
    ]


def test_yearly_plan_paid_in_advance_bills_its_fee_at_the_year_start_and_charges_monthly(
    engine: Engine, tmp_path: Path
) -> None:
    """In advance: the fee of each year on the invoice of its first day (the first year's
    from the start, 61/365 of $120), the charges of each month on the next month's invoice."""
    catalog(engine, tmp_path, start="2025-11-01T04:00:00Z",
            plan={"interval": "yearly", "amount_cents": 12000, "bill_charges_monthly": True,
                  "pay_in_advance": True})
    usage_events(engine, tmp_path, datetime(2025, 11, 10, 12, tzinfo=UTC), prefix="n")
    usage_events(engine, tmp_path, datetime(2025, 12, 10, 12, tzinfo=UTC), prefix="d")
    ingested_until(engine, NEW_YEAR)
    for moment in (datetime(2025, 11, 1, 10, tzinfo=UTC), DECEMBER, NEW_YEAR):
        hour(engine, moment)
    by_day = {i["issuing_date"]: [f[:2] for f in _fees(i)] for i in invoices(engine)}
    assert by_day == {
        "2025-11-01": [("subscription", 2005)],
        "2025-12-01": [("charge", 200), ("charge", 600)],
        "2026-01-01": [("charge", 200), ("charge", 600), ("subscription", 12000)],
    }
