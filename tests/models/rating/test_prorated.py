"""Prorated charges, table-driven against Lago's rules and its own spec figures.

Aggregation (ProratedAggregations::SumService): each event's value weighs
(last charged day - event day + 1) / days of the full period, in the customer's local days;
units carried from earlier periods weigh the covered share of the period; the result is ceiled
to 5 decimals. Charge models: standard prices the prorated units, volume picks its range with
the full units, prorated graduated walks (full, prorated) entries (ProratedGraduatedService;
the figures below are those of Lago's spec for it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from tallyflow.models.rating import (
    BillingPeriod,
    EventPoint,
    SumState,
    UniqueCountState,
    period_containing,
    proration_window,
)
from tallyflow.models.rating.aggregation import (
    ProratedUnits,
    ProrationWindow,
    prorate_sum,
    prorate_unique,
)
from tallyflow.models.rating.charge_models import (
    compute_prorated,
    parse_properties,
    prorated_graduated,
)

MAY = ProrationWindow(start=date(2023, 5, 1), last=date(2023, 5, 31), days=31, covered=D(1))


def _state(total: str, days: dict[str, str]) -> SumState:
    return SumState(D(total), 1, 0, D(0), {k: D(v) for k, v in days.items()})


SUMS = [
    # (id, state total, per-day totals, window, full, prorated)
    # Lago's spec: 2 x 2.5 carried, 2 x 12 on 26 May -> 5 + 24 * 6/31
    ("lago-carried-and-new", "29", {"2023-05-26": "24"}, MAY, "29", "9.64517"),
    # ... and 4.5 on the last day counts 1/31
    ("lago-last-day", "33.5", {"2023-05-26": "24", "2023-05-31": "4.5"}, MAY, "33.5",
     "9.79033"),
    ("first-day-counts-whole", "10", {"2023-05-01": "10"}, MAY, "10", "10.00000"),
    # days of earlier periods in the merged state are carried units
    ("earlier-days-carried", "29", {"2023-04-10": "5", "2023-05-26": "24"}, MAY, "29",
     "9.64517"),
    # a removal is prorated like an addition: 10 - 4 * 16/31
    ("removal", "6", {"2023-05-16": "-4"}, MAY, "6", "7.93549"),
    # terminated on 15 May: carried weigh 15/31, an event of 10 May weighs 6/31
    ("terminated", "17", {"2023-05-10": "12"},
     ProrationWindow(date(2023, 5, 1), date(2023, 5, 15), 31, D(15) / D(31)), "17", "4.74194"),
    # started on 20 May: still divided by the 31 days of the full period
    ("partial-first-period", "10", {"2023-05-20": "10"},
     ProrationWindow(date(2023, 5, 1), date(2023, 5, 31), 31, D(12) / D(31)), "10", "3.87097"),
    # Lago's upgrade case: 5 carried into a period covered from 15 May: 5 * 17/31
    ("carried-partial-cover", "5", {},
     ProrationWindow(date(2023, 5, 1), date(2023, 5, 31), 31, D(17) / D(31)), "5", "2.74194"),
    ("nothing", "0", {}, MAY, "0", "0.00000"),
    # a plan change on 15 May: the replaced row's 4 units of 3 May are carried at 17/31,
    # the new row's 2 units of 20 May weigh 12/31 -> (68 + 24) / 31
    ("plan-change-carries-earlier-days", "6", {"2023-05-03": "4", "2023-05-20": "2"},
     ProrationWindow(date(2023, 5, 15), date(2023, 5, 31), 31, D(17) / D(31)), "6", "2.96775"),
]


@pytest.mark.parametrize(
    ("total", "days", "window", "full", "prorated"),
    [case[1:] for case in SUMS],
    ids=[case[0] for case in SUMS],
)
def test_prorated_sum(
    total: str, days: dict[str, str], window: ProrationWindow, full: str, prorated: str
) -> None:
    units = prorate_sum(_state(total, days), window)
    assert units.full == D(full)
    assert units.prorated == D(prorated)


def test_entries_list_carried_first_then_days_in_order() -> None:
    units = prorate_sum(_state("33.5", {"2023-05-31": "4.5", "2023-05-26": "24"}), MAY)
    q = D("1E-20")
    assert [(f, p.quantize(q)) for f, p in units.entries] == [
        (D(5), D(5).quantize(q)),
        (D(24), (D(144) / 31).quantize(q)),
        (D("4.5"), (D("4.5") / 31).quantize(q)),
    ]


def test_folding_in_any_split_gives_the_same_days() -> None:
    points = [
        EventPoint(datetime(2023, 5, d, 12, tzinfo=UTC), d, D(v), day=date(2023, 5, d))
        for d, v in ((3, "2"), (3, "1.5"), (20, "-1"), (31, "7"))
    ]
    whole = SumState().fold(points)
    split = SumState().fold(points[:2]).merge(SumState().fold(points[2:]))
    assert whole == split
    assert whole.days == {"2023-05-03": D("3.5"), "2023-05-20": D(-1), "2023-05-31": D(7)}
    assert SumState.from_json(whole.to_json()) == whole


def _period(**changes: Any) -> BillingPeriod:
    args: dict[str, Any] = {
        "at": datetime(2026, 3, 10, tzinfo=UTC), "interval": "monthly",
        "billing_time": "calendar", "subscription_at": datetime(2026, 1, 1, tzinfo=UTC),
        "timezone": "America/New_York", **changes,
    }
    return period_containing(**args)


WINDOWS = [
    ("whole-month", {}, date(2026, 3, 1), date(2026, 3, 31), D(1)),
    # terminated 15 March 02:00 UTC = 14 March in New York: the local day counts
    ("terminated-local-day", {"terminated_at": datetime(2026, 3, 15, 2, tzinfo=UTC)},
     date(2026, 3, 1), date(2026, 3, 14), D(14) / D(31)),
    # started (or changed plan) on 5 March: earlier units are carried at 27/31
    ("started-mid-month", {"subscription_at": datetime(2026, 3, 5, 12, tzinfo=UTC)},
     date(2026, 3, 5), date(2026, 3, 31), D(27) / D(31)),
]


@pytest.mark.parametrize(
    ("changes", "first", "last", "covered"), [c[1:] for c in WINDOWS],
    ids=[c[0] for c in WINDOWS],
)
def test_proration_window_of_a_period(
    changes: dict[str, Any], first: date, last: date, covered: D
) -> None:
    window = proration_window(_period(**changes))
    assert (window.start, window.last, window.days) == (first, last, 31)
    assert window.covered == covered


LAGO_TWO = {"graduated_ranges": [
    {"from_value": 0, "to_value": 5, "per_unit_amount": "10", "flat_amount": "100"},
    {"from_value": 6, "to_value": None, "per_unit_amount": "5", "flat_amount": "50"},
]}
LAGO_FIRST_COVERS = {"graduated_ranges": [
    {"from_value": 0, "to_value": 1, "per_unit_amount": "10", "flat_amount": "100"},
    {"from_value": 2, "to_value": None, "per_unit_amount": "5", "flat_amount": "50"},
]}
LAGO_THREE = {"graduated_ranges": [
    {"from_value": 0, "to_value": 5, "per_unit_amount": "10", "flat_amount": "100"},
    {"from_value": 6, "to_value": 15, "per_unit_amount": "5", "flat_amount": "50"},
    {"from_value": 16, "to_value": None, "per_unit_amount": "2", "flat_amount": "0"},
]}

GRADUATED = [
    # (id, ranges, full per entry, prorated per entry, prorated total, Lago's amount)
    ("lago-basic", LAGO_TWO, [5, 5, 10, -6], ["3.5", "2.66667", "2", "-2.2"], "5.96667",
     "197.33"),
    ("lago-partial-placement", LAGO_TWO, [2, 5, 10, -6], ["1.4", "2.66667", "2", "-2.2"],
     "3.86667", "184.33"),
    ("lago-zero-final-units", LAGO_TWO, [1, 4, 1, -5, -1],
     ["0.7097", "1.54839", "0.2258", "-0.80645", "-0.0645"], "1.613", "165.81"),
    ("lago-negative-changes-range", LAGO_TWO, [5, -2], ["3.5", "-1"], "2.5", "125"),
    ("lago-overflow-and-change", LAGO_TWO, [4, 2, -3], ["2.8", "1", "-0.6"], "3.2", "180.5"),
    ("lago-overflows-both-ways", LAGO_TWO, [5, 2, -4, 10], ["3.5", "1", "-1.6", "2"], "4.9",
     "190"),
    ("lago-negative-total", LAGO_TWO, [5, -100], ["2", "-33.33"], "-31.33", "0"),
    ("lago-one-range-negative", LAGO_TWO, [4, -100], ["1.6", "-33.33"], "-31.73", "0"),
    ("lago-one-range", LAGO_TWO, [1], ["0.7"], "0.7", "107"),
    ("lago-first-unit-covers-range", LAGO_FIRST_COVERS, [1], ["0.7"], "0.7", "107"),
    ("lago-two-overflows", LAGO_THREE, [75], ["75"], "75", "370"),
    ("nothing", LAGO_TWO, [], [], "0", "0"),
]


@pytest.mark.parametrize(
    ("ranges", "full", "prorated", "total", "amount"),
    [case[1:] for case in GRADUATED],
    ids=[case[0] for case in GRADUATED],
)
def test_prorated_graduated_reproduces_lago(
    ranges: dict[str, Any], full: list[int], prorated: list[str], total: str, amount: str
) -> None:
    props = parse_properties("graduated", ranges)
    entries = tuple((D(f), D(p)) for f, p in zip(full, prorated, strict=True))
    units = ProratedUnits(D(sum(full)), D(total), entries)
    priced = max(prorated_graduated(props.ranges, units), D(0))  # type: ignore[union-attr]
    assert priced.quantize(D("0.01")) == D(amount)
    result = compute_prorated(props, units, 3)
    assert result.units == max(D(sum(full)), D(0))  # the fee shows the full units
    assert result.amount == prorated_graduated(props.ranges, units)  # type: ignore[union-attr]


def test_lago_three_ranges_one_overflow() -> None:
    # Lago's spec ceils this one to cents: 191.34
    props = parse_properties("graduated", LAGO_THREE)
    full, prorated = [2, 5, 10, -6, 4, 60], ["1.4", "2.5", "2", "-2.2", "0.667", "2"]
    units = ProratedUnits(D(75), D("6.36"), tuple((D(f), D(p)) for f, p in zip(full, prorated,
                                                                              strict=True)))
    amount = prorated_graduated(props.ranges, units)  # type: ignore[union-attr]
    assert amount.quantize(D("0.01"), rounding="ROUND_CEILING") == D("191.34")


VOLUME = {"volume_ranges": [
    {"from_value": 0, "to_value": 10, "per_unit_amount": "2", "flat_amount": "1"},
    {"from_value": 11, "to_value": None, "per_unit_amount": "1", "flat_amount": "3"},
]}

MODELS = [
    # (id, model, properties, full, prorated, amount)
    ("standard", "standard", {"amount": "2"}, "29", "9.64517", "19.29034"),
    ("standard-negative", "standard", {"amount": "2"}, "-3", "-1.5", "0"),
    # 14 full units pick the second range, whose price applies to the 6.2 prorated units
    ("volume-range-by-full-units", "volume", VOLUME, "14", "6.2", "9.2"),
    ("volume-first-range", "volume", VOLUME, "8", "3", "7"),
]


@pytest.mark.parametrize(
    ("model", "properties", "full", "prorated", "amount"),
    [case[1:] for case in MODELS],
    ids=[case[0] for case in MODELS],
)
def test_prorated_standard_and_volume(
    model: str, properties: dict[str, Any], full: str, prorated: str, amount: str
) -> None:
    units = ProratedUnits(D(full), D(prorated), ())
    result = compute_prorated(parse_properties(model, properties), units)
    assert result.amount == D(amount)
    assert result.units == max(D(full), D(0))


def test_other_models_are_not_prorated() -> None:
    props = parse_properties("package", {"amount": "1", "package_size": 10, "free_units": 0})
    with pytest.raises(ValueError, match="cannot be prorated"):
        compute_prorated(props, ProratedUnits(D(1), D(1), ()))


def _ops(*events: tuple[str, str, str]) -> UniqueCountState:
    """(value, ISO timestamp, operation) in any order -> a folded recurring unique count."""
    points = []
    for seq, (value, stamp, op) in enumerate(events):
        moment = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        points.append(EventPoint(moment, seq, None, {"operation_type": op}, value,
                                 day=moment.date()))
    return UniqueCountState().fold(points)


UNIQUES = [
    # (id, events, window, full units, prorated units)
    ("added-in-period", [("a", "2023-05-10T08:00", "add")], MAY, 1, "0.70968"),  # 22/31
    ("added-before", [("a", "2023-04-10T08:00", "add")], MAY, 1, "1.00000"),
    ("removed-in-period-counts-its-day",
     [("a", "2023-04-10T08:00", "add"), ("a", "2023-05-10T08:00", "remove")], MAY, 0,
     "0.32259"),  # 1..10 May
    ("added-and-removed-in-period",
     [("a", "2023-05-10T08:00", "add"), ("a", "2023-05-20T08:00", "remove")], MAY, 0,
     "0.35484"),  # 10..20 May
    ("removed-before", [("a", "2023-04-01T08:00", "add"), ("a", "2023-04-20T08:00", "remove")],
     MAY, 0, "0"),
    ("first-add-removed-same-day",
     [("a", "2023-05-27T08:00", "add"), ("a", "2023-05-27T09:00", "remove")], MAY, 0,
     "0.03226"),  # Lago keeps a value's first change: 1 day
    # Lago's own example (unique_count_query.rb): 27-28 and 30-31 May
    ("lago-same-day-changes", [
        ("a", "2023-05-27T08:00", "add"), ("a", "2023-05-27T09:00", "remove"),
        ("a", "2023-05-27T10:00", "add"), ("a", "2023-05-28T08:00", "add"),
        ("a", "2023-05-28T09:00", "remove"), ("a", "2023-05-30T08:00", "add")],
     MAY, 1, "0.12904"),
    # a later add undone the same day is not kept (only a value's first change is)
    ("later-add-removed-same-day", [
        ("a", "2023-04-01T08:00", "add"), ("a", "2023-04-03T08:00", "remove"),
        ("a", "2023-05-12T08:00", "add"), ("a", "2023-05-12T09:00", "remove")], MAY, 0, "0"),
    ("repeated-adds-count-once",
     [("a", "2023-05-10T08:00", "add"), ("a", "2023-05-20T08:00", "add")], MAY, 1, "0.70968"),
    ("remove-without-add", [("a", "2023-05-10T08:00", "remove")], MAY, 0, "0"),
    ("terminated", [("a", "2023-05-10T08:00", "add")],
     ProrationWindow(date(2023, 5, 1), date(2023, 5, 15), 31, D(15) / D(31)), 1, "0.19355"),
    ("two-values", [("a", "2023-05-10T08:00", "add"), ("b", "2023-04-02T08:00", "add"),
                    ("b", "2023-05-02T08:00", "remove")], MAY, 1, "0.77420"),  # 22/31 + 2/31
]


@pytest.mark.parametrize(
    ("events", "window", "full", "prorated"),
    [case[1:] for case in UNIQUES],
    ids=[case[0] for case in UNIQUES],
)
def test_prorated_unique_count(
    events: list[tuple[str, str, str]], window: ProrationWindow, full: int, prorated: str
) -> None:
    state = _ops(*events)
    units = prorate_unique(state, window)
    assert (units.full, units.prorated) == (D(full), D(prorated))
    # any split and order of the folds gives the same state (exact, incremental)
    halves = _ops(*events[::2]).merge(_ops(*events[1::2]))
    assert prorate_unique(halves, window) == units
    assert UniqueCountState.from_json(state.to_json()) == state


def test_unique_entries_are_lagos_per_event_breakdown() -> None:
    state = _ops(("a", "2023-04-10T08:00", "add"), ("a", "2023-05-10T08:00", "remove"),
                 ("b", "2023-05-20T08:00", "add"))
    assert prorate_unique(state, MAY).entries == (
        (D(1), D("0.32259")), (D(-1), D(0)), (D(1), D("0.38710")))
