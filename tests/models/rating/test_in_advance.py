"""The fee of each event of a charge paid in advance (Lago's pay-in-advance fees), table-driven:
per charge model and aggregation, per filter bucket, after the events already billed, and
the late-event rule (docs/invoices.md, "Charges paid in advance")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from tallyflow.models.rating.aggregation import AggregationType, EventPoint
from tallyflow.models.rating.filters import MetricFilter, charge_filter_from_values
from tallyflow.models.rating.in_advance import BilledEvent, advance_fees
from tallyflow.models.rating.pricing import ChargeInfo, FilterInfo, MetricInfo, pricing_of

T0 = datetime(2025, 3, 10, 12, tzinfo=UTC)
KINDS = MetricFilter("type", ("input", "output"))


def charge(kind: str, model: str, properties: dict[str, Any],
           filters: list[tuple[dict[str, list[str]], dict[str, Any]]] = ()) -> ChargeInfo:
    metric = MetricInfo(1, "m", "Metric", AggregationType(kind), "x", False, None, None,
                        (KINDS,), (), T0)
    return ChargeInfo(
        id=7, position=0, metric=metric, charge_model=model, properties=properties,
        invoice_display_name=None, pricing_group_keys=(),
        filters=tuple(FilterInfo(i, values, props, None,
                                 charge_filter_from_values(values, metric.filters),
                                 pricing_of(model, props))
                      for i, (values, props) in enumerate(filters)),
        pricing=pricing_of(model, properties), pay_in_advance=True,
    )


def point(seq: int, x: Any = None, minutes: int | None = None, **props: str) -> EventPoint:
    properties = {**props, **({"x": str(x)} if x is not None else {})}
    return EventPoint.from_event(timestamp=T0 + timedelta(minutes=seq if minutes is None
                                                          else minutes),
                                 seq=seq, properties=properties, field_name="x")


def cents(fees: list[Any]) -> list[int]:
    return [f.fee.amount_cents for f in fees]


GRADUATED = {"graduated_ranges": [
    {"from_value": 0, "to_value": 100, "per_unit_amount": "0.10", "flat_amount": "5"},
    {"from_value": 100, "to_value": None, "per_unit_amount": "0.05", "flat_amount": "0"}]}

CASES = [
    # (id, aggregation, model, properties, event values, cents per event)
    ("standard-sum-only-increases", "sum_agg", "standard", {"amount": "1"},
     [10, -4, 8], [1000, 0, 400]),
    ("standard-count", "count_agg", "standard", {"amount": "0.5"}, [None, None, None],
     [50, 50, 50]),
    ("package", "sum_agg", "package",
     {"amount": "1", "package_size": 1_000_000, "free_units": 0},
     [1_500_000, 1_500_000, 1], [200, 100, 100]),  # 3,000,001 units: a 4th package
    ("package-free-units", "sum_agg", "package",
     {"amount": "1", "package_size": 1_000_000, "free_units": 1_000_000},
     [1_500_000, 1_500_000], [100, 100]),
    ("graduated-first-event-pays-the-flat-fee", "sum_agg", "graduated", GRADUATED,
     [50, 50, 100], [1000, 500, 500]),
    ("percentage-free-units-and-transaction-limits", "sum_agg", "percentage",
     {"rate": "10", "free_units_per_events": 1, "per_transaction_max_amount": "3",
      "per_transaction_min_amount": "0.5"},
     [100, 50, 2], [0, 300, 50]),
    ("percentage-free-total", "sum_agg", "percentage",
     {"rate": "10", "free_units_per_total_aggregation": "150"}, [100, 100], [0, 500]),
    ("percentage-fixed-amount", "sum_agg", "percentage", {"rate": "1", "fixed_amount": "0.2"},
     [100, 100], [120, 120]),
    ("unique-count-with-removals", "unique_count_agg", "standard", {"amount": "3"},
     ["u1", "u2", "u1", ("remove", "u1"), "u1", "u3"], [300, 300, 0, 0, 0, 300]),
]


@pytest.mark.parametrize(("kind", "model", "properties", "values", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fee_per_event(kind: str, model: str, properties: dict[str, Any], values: list[Any],
                       expected: list[int]) -> None:
    points = []
    for seq, value in enumerate(values, start=1):
        if isinstance(value, tuple):
            points.append(point(seq, value[1], operation_type=value[0]))
        else:
            points.append(point(seq, value))
    fees = advance_fees(charge(kind, model, properties), "USD", [], points)
    assert cents(fees) == expected
    assert [f.point.seq for f in fees] == list(range(1, len(values) + 1))


def test_events_are_priced_in_timestamp_then_ingestion_order() -> None:
    """Given out of order: priced by (timestamp, seq); ties broken by ingestion order."""
    c = charge("sum_agg", "package", {"amount": "1", "package_size": 10, "free_units": 0})
    late_ingested = point(3, 15, minutes=0)
    first = point(1, 5, minutes=0)
    fees = advance_fees(c, "USD", [], [late_ingested, point(2, 1, minutes=-5), first])
    assert [(f.point.seq, f.fee.amount_cents) for f in fees] == [(2, 100), (1, 0), (3, 200)]


def test_each_filter_bucket_is_priced_on_its_own_and_the_default_bucket_at_zero() -> None:
    c = charge("sum_agg", "standard", {}, [({"type": ["input"]}, {"amount": "1"}),
                                           ({"type": ["output"]}, {"amount": "3"})])
    fees = advance_fees(c, "USD", [], [point(1, 2, type="input"), point(2, 2, type="output"),
                                       point(3, 2, type="other"), point(4, 1, type="input")])
    assert [(f.bucket, f.fee.amount_cents) for f in fees] == [
        (0, 200), (1, 600), (None, 0), (0, 100)]


def test_new_events_are_priced_after_those_already_billed() -> None:
    """The package counts the billed units of the same bucket only."""
    c = charge("sum_agg", "package", {}, [
        ({"type": ["input"]}, {"amount": "1", "package_size": 10, "free_units": 0})])
    billed = [BilledEvent(point(1, 15, type="input"), 0, (), D(15)),
              BilledEvent(point(2, 99, type="output"), None, (), D(99))]
    fees = advance_fees(c, "USD", billed, [point(3, 6, type="input")])
    assert cents(fees) == [100]  # 15 -> 21 units: 2 -> 3 packages


def test_a_late_event_pays_its_own_delta_after_the_billed_ones() -> None:
    """e1 (15 units, 2 packages) was billed; e0, one hour older, arrives later: it pays
    3 - 2 packages, not the 2 it would have paid first in time order; e1 is not re-priced."""
    c = charge("sum_agg", "package", {"amount": "1", "package_size": 10, "free_units": 0})
    billed = [BilledEvent(point(1, 15), None, (), D(15))]
    fees = advance_fees(c, "USD", billed, [point(2, 15, minutes=-60)])
    assert cents(fees) == [100]


@pytest.mark.parametrize(("late", "units", "amount"), [
    (("remove", -60), D(0), 0),   # an older remove does not undo the newer add
    (("remove", 60), D(-1), 0),   # a newer remove does, and a removal is never paid back
    (("add", -60), D(0), 0),      # already counted
])
def test_unique_count_late_events_are_judged_in_time_order(
    late: tuple[str, int], units: D, amount: int
) -> None:
    c = charge("unique_count_agg", "standard", {"amount": "3"})
    billed = [BilledEvent(point(1, "u1"), None, (), D(1))]
    operation, minutes = late
    fees = advance_fees(c, "USD", billed,
                        [point(2, "u1", minutes=minutes, operation_type=operation)])
    assert [(f.units, f.fee.amount_cents) for f in fees] == [(units, amount)]


def test_unbillable_events_are_left_out() -> None:
    c = charge("sum_agg", "standard", {"amount": "1"})
    assert advance_fees(c, "USD", [], [point(1, "abc"), point(2)]) == []


def test_aggregations_lago_refuses_in_advance_raise() -> None:
    with pytest.raises(ValueError, match="not available for max_agg"):
        advance_fees(charge("max_agg", "standard", {"amount": "1"}), "USD", [], [point(1, 1)])
