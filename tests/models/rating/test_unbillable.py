"""Unbillable events counted at rating time (models/rating/unbillable.py): ``not_a_number`` from
what the fold kept, ``unpriced`` from the charge filters, per subscription and metric."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallyflow.models.rating import (
    AggregationType,
    CountState,
    MetricFilter,
    SumState,
    charge_filter_from_values,
)
from tallyflow.models.rating.pricing import (
    ChargeInfo,
    FilterInfo,
    MetricInfo,
    StateKey,
    pricing_of,
)
from tallyflow.models.rating.unbillable import (
    SAMPLE_IDS,
    StateTally,
    Unbillable,
    UnbillableReason,
    first_ids,
    unbillable_of,
)

P0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLIER = P0 - timedelta(days=31)
MODEL = MetricFilter("model", ("a", "b"))
NAN, UNPRICED = UnbillableReason.NOT_A_NUMBER, UnbillableReason.UNPRICED


def metric(metric_id: int = 1, code: str = "tokens") -> MetricInfo:
    return MetricInfo(metric_id, code, code, AggregationType.SUM, "n", False, None, None,
                      (MODEL,), (), P0)


def charge(m: MetricInfo, filters: list[list[str]] | None = None,
           properties: dict[str, Any] | None = None, charge_id: int = 7) -> ChargeInfo:
    props = properties or {}
    return ChargeInfo(
        id=charge_id, position=charge_id, metric=m, charge_model="standard", properties=props,
        invoice_display_name=None, pricing_group_keys=(),
        filters=tuple(
            FilterInfo(i, {"model": values}, {"amount": "1"}, None,
                       charge_filter_from_values({"model": values}, m.filters),
                       pricing_of("standard", {"amount": "1"}))
            for i, values in enumerate(filters or [])),
        pricing=pricing_of("standard", props),
    )


def key(model: str | None, metric_id: int = 1, start: datetime = P0) -> StateKey:
    return (metric_id, start, (("model", model),), ())


def state(events: int) -> SumState:
    return SumState(Decimal(events), events)


M = metric()
FILTERED = charge(M, [["a"]])  # (default) has no price: unmatched events bill 0.00
FILTERED_PRICED = charge(M, [["a"]], {"amount": "0.5"})  # (default) has a price of its own
PLAIN = charge(M)


# (case, charges, states, tallies) -> expected
CASES: list[tuple[str, list[ChargeInfo], dict[StateKey, Any], dict[StateKey, StateTally],
                  list[Unbillable]]] = [
    ("clean", [FILTERED], {key("a"): state(3)}, {key("a"): StateTally(0, (), ("t1",))}, []),
    ("not a number, counted with its samples", [PLAIN],
     {key(None): state(2)}, {key(None): StateTally(2, ("x1", "x2"), ("t1",))},
     [Unbillable("tokens", NAN, 2, ("x1", "x2"))]),
    ("unmatched by every filter, no default price", [FILTERED],
     {key("a"): state(3), key("b"): state(2), key(None): state(1)},
     {key("b"): StateTally(0, (), ("b1", "b2")), key(None): StateTally(0, (), ("n1",))},
     [Unbillable("tokens", UNPRICED, 3, ("b1", "b2", "n1"))]),
    ("a default price prices them", [FILTERED_PRICED], {key("b"): state(2)}, {}, []),
    ("a charge without filters prices them", [FILTERED, charge(M, charge_id=8)],
     {key("b"): state(2)}, {}, []),
    ("every filtered charge leaves them out", [FILTERED, charge(M, [["a"]], charge_id=8)],
     {key("b"): state(2)}, {key("b"): StateTally(0, (), ("b1",))},
     [Unbillable("tokens", UNPRICED, 2, ("b1",))]),
    ("both reasons on one metric", [FILTERED], {key("b"): state(1), key("a"): state(0)},
     {key("a"): StateTally(4, ("x1", "x2", "x3"), ()), key("b"): StateTally(0, (), ("b1",))},
     [Unbillable("tokens", NAN, 4, ("x1", "x2", "x3")),
      Unbillable("tokens", UNPRICED, 1, ("b1",))]),
    ("an earlier period is not this one's", [FILTERED], {key("b", start=EARLIER): state(5)},
     {key("b", start=EARLIER): StateTally(1, ("x",), ("b",))}, []),
    ("a metric the plan does not charge", [FILTERED], {key("b", metric_id=2): state(5)},
     {key("b", metric_id=2): StateTally(1, ("x",), ("b",))}, []),
    ("an empty state is nothing", [FILTERED], {key("b"): state(0)}, {}, []),
]


@pytest.mark.parametrize(("charges", "states", "tallies", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unbillable_per_metric_and_reason(
    charges: list[ChargeInfo], states: dict[StateKey, Any], tallies: dict[StateKey, StateTally],
    expected: list[Unbillable],
) -> None:
    assert list(unbillable_of(charges, P0, states, tallies)) == expected


def test_counts_are_per_metric_in_charge_order() -> None:
    other = metric(2, "requests")
    count_charge = ChargeInfo(
        id=9, position=0, metric=other, charge_model="standard", properties={},
        invoice_display_name=None, pricing_group_keys=(),
        filters=(FilterInfo(0, {"model": ["a"]}, {"amount": "1"}, None,
                            charge_filter_from_values({"model": ["a"]}, other.filters),
                            pricing_of("standard", {"amount": "1"})),),
        pricing=pricing_of("standard", {}))
    states: dict[StateKey, Any] = {key("b", 2): CountState(4), key(None): state(1)}
    tallies = {key(None): StateTally(1, ("x",), ())}
    assert list(unbillable_of([count_charge, PLAIN], P0, states, tallies)) == [
        Unbillable("requests", UNPRICED, 4, ()), Unbillable("tokens", NAN, 1, ("x",))]


def test_as_json_is_the_api_shape() -> None:
    assert Unbillable("tokens", NAN, 2, ("x1", "x2")).as_json() == {
        "billable_metric_code": "tokens", "reason": "not_a_number", "count": 2,
        "sample_transaction_ids": ["x1", "x2"]}


ids = st.lists(st.text(alphabet="abc", min_size=1, max_size=2), max_size=5)


@given(st.lists(st.tuples(st.integers(0, 5), ids, ids), min_size=1, max_size=6))
def test_tallies_merge_as_one_bounded_tally(parts: list[tuple[int, list[str], list[str]]]) -> None:
    """Merging is associative in counts and keeps at most SAMPLE_IDS distinct ids, the first
    seen: however many folds add to a state, its samples stay small and stable."""
    tallies = [StateTally(n, first_ids(a), first_ids(b)) for n, a, b in parts]
    left = tallies[0]
    for tally in tallies[1:]:
        left = left.merge(tally)
    assert left.not_a_number == sum(n for n, _, _ in parts)
    everything = first_ids(*(t.not_a_number_ids for t in tallies))
    assert left.not_a_number_ids == everything
    assert len(left.sample_ids) <= SAMPLE_IDS and len(set(left.sample_ids)) == len(
        left.sample_ids)
