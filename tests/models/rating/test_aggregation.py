import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallyflow.models.rating.aggregation import (
    AggregationType,
    CountState,
    EventPoint,
    LatestState,
    MaxState,
    SumState,
    TimeWindow,
    UniqueCountState,
    WeightedSumState,
    aggregate,
    apply_rounding,
    check_recurring,
    empty_state,
    merge_all,
    per_event_units,
    state_from_json,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MONTH = TimeWindow(T0, datetime(2024, 3, 31, tzinfo=UTC), D(30 * 86400))


def point(
    seconds: int,
    value: str | None,
    seq: int = 0,
    text: str | None = None,
    operation: str | None = None,
) -> EventPoint:
    properties = {} if operation is None else {"operation_type": operation}
    return EventPoint(
        timestamp=T0 + timedelta(seconds=seconds),
        seq=seq,
        value=None if value is None else D(value),
        properties=properties,
        text=text if text is not None else value,
    )


def test_event_point_requires_aware_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EventPoint(datetime(2024, 1, 1), 0, D(1))


def test_event_point_from_event_parses_text() -> None:
    p = EventPoint.from_event(
        timestamp=T0, seq=1, properties={"tokens": 2000000, "model": "small"}, field_name="tokens"
    )
    assert p.value == D(2000000)
    assert p.properties == {"tokens": "2000000", "model": "small"}
    bad = EventPoint.from_event(
        timestamp=T0, seq=2, properties={"tokens": "1e6"}, field_name="tokens"
    )
    assert bad.value is None and bad.text == "1e6"


def test_count_counts_every_event() -> None:
    state = CountState.empty().fold([point(0, "1"), point(1, None), point(2, None, text="x")])
    assert state.result() == 3 and state.events_count == 3


def test_sum_skips_and_reports_unbillable() -> None:
    state = SumState.empty().fold([point(0, "1.5"), point(1, None), point(2, "-0.5")])
    assert (state.result(), state.events_count, state.unbillable_count) == (D(1), 2, 1)


def test_sum_tracks_precise_total_amount_cents_for_dynamic() -> None:
    p = EventPoint(T0, 0, D(3), precise_total_amount_cents=D("12.5"))
    state = SumState.empty().add(p).add(EventPoint(T0, 1, None, precise_total_amount_cents=D(1)))
    assert state.precise_total_amount_cents == D("13.5")


def test_max_zero_when_none() -> None:
    assert MaxState.empty().result() == 0
    assert MaxState.empty().fold([point(0, "3"), point(1, "7"), point(2, "5")]).result() == 7


def test_latest_by_timestamp_then_seq_and_negative_is_zero() -> None:
    state = LatestState.empty().fold([point(10, "4", seq=2), point(10, "9", seq=1), point(5, "1")])
    assert state.result() == 4
    assert LatestState.empty().add(point(0, "-3")).result() == 0


def test_unique_count_lago_example() -> None:
    # Lago's breakdown example: 001 add, add, remove; 002 remove, add -> only 002 remains
    day = 86400
    events = [
        point(0 * day, None, 1, text="001"),
        point(1 * day, None, 2, text="001"),
        point(1 * day + 36000, None, 3, text="002", operation="remove"),
        point(2 * day, None, 4, text="001", operation="remove"),
        point(3 * day, None, 5, text="002"),
    ]
    state = UniqueCountState.empty().fold(events)
    assert state.result() == 1
    assert state.is_active("002") and not state.is_active("001")


def test_unique_count_unknown_operation_is_unbillable() -> None:
    state = UniqueCountState.empty().add(point(0, None, text="a", operation="toggle"))
    assert (state.result(), state.unbillable_count) == (0, 1)


def test_weighted_sum_constant_level_and_projection() -> None:
    state = WeightedSumState.empty()
    assert state.result(MONTH, initial_level=D(7)) == 7
    # +10 after a third of the month: 10 for the remaining two thirds (projected to the end)
    third = WeightedSumState.empty().add(point(10 * 86400, "10"))
    assert third.result(MONTH) == D("6.66666666666666666667")  # ceil to 20 places, like Lago
    both = third.add(point(20 * 86400, "-10"))
    assert both.result(MONTH) == D("3.33333333333333333334")
    assert both.end_level(D(5)) == 5


def test_weighted_sum_recurring_initial_level_is_sum_of_previous_variations() -> None:
    march = WeightedSumState.empty().fold([point(0, "4"), point(86400, "6")])
    april_start = T0 + timedelta(days=30)
    april = TimeWindow(april_start, april_start + timedelta(days=30), D(30 * 86400))
    assert aggregate(WeightedSumState.empty(), window=april, initial_level=march.end_level()) == 10
    with pytest.raises(ValueError, match="window"):
        aggregate(WeightedSumState.empty())


@pytest.mark.parametrize(
    ("value", "function", "precision", "expected"),
    [
        ("123.456", "round", -2, "100"),
        ("123.456", "ceil", -2, "200"),
        ("123.456", "floor", -2, "100"),
        ("150", "round", -2, "200"),
        ("123.456", "round", 2, "123.46"),
        ("123.455", "round", 2, "123.46"),
        ("123.451", "ceil", 2, "123.46"),
        ("123.459", "floor", 2, "123.45"),
        ("123.5", "round", None, "124"),
        ("-1.5", "round", 0, "-2"),
        ("-1.5", "ceil", 0, "-1"),
        ("-1.5", "floor", 0, "-2"),
        ("123.456", None, 2, "123.456"),
    ],
)
def test_apply_rounding(value: str, function: str | None, precision: int | None, expected: str):
    result = apply_rounding(D(value), function, precision)
    assert result == D(expected)
    assert str(result) == expected


def test_aggregate_applies_metric_rounding() -> None:
    state = SumState.empty().fold([point(0, "123.4"), point(1, "0.056")])
    assert aggregate(state, rounding_function="ceil", rounding_precision=-2) == 200


def _recurring_accepted(kind: AggregationType) -> bool:
    try:
        check_recurring(kind, True)
    except ValueError as refused:
        assert "recurring" in str(refused)
        return False
    return True


# Lago: count, max and latest are never recurring; the others may be.
RECURRING_ALLOWED = {
    AggregationType.COUNT: False,
    AggregationType.MAX: False,
    AggregationType.LATEST: False,
    AggregationType.SUM: True,
    AggregationType.UNIQUE_COUNT: True,
    AggregationType.WEIGHTED_SUM: True,
}


def test_recurring_table_covers_every_aggregation() -> None:
    assert set(RECURRING_ALLOWED) == set(AggregationType)


@pytest.mark.parametrize("kind", sorted(RECURRING_ALLOWED))
def test_recurring_allowed_only_where_lago_allows_it(kind: AggregationType) -> None:
    assert _recurring_accepted(kind) is RECURRING_ALLOWED[kind]
    check_recurring(kind, False)  # a non-recurring metric is always fine


def test_recurring_sum_and_unique_count_merge_all_history() -> None:
    periods = [SumState.empty().add(point(0, "2")), SumState.empty().add(point(1, "3"))]
    assert merge_all("sum_agg", periods).result() == 5
    first = UniqueCountState.empty().add(point(0, None, 1, text="u1"))
    second = UniqueCountState.empty().add(point(99, None, 2, text="u1", operation="remove"))
    assert merge_all("unique_count_agg", [first]).result() == 1
    assert merge_all("unique_count_agg", [second, first]).result() == 0


def test_per_event_units_for_pay_in_advance() -> None:
    events = [point(2, "5", 2), point(1, "3", 1), point(3, None, 3)]
    assert [u for _, u in per_event_units("sum_agg", events)] == [D(3), D(5), D(0)]
    assert [u for _, u in per_event_units("count_agg", events)] == [D(1)] * 3
    uniques = [
        point(1, None, 1, text="a"),
        point(2, None, 2, text="a"),
        point(3, None, 3, text="b"),
        point(4, None, 4, text="a", operation="remove"),
        point(5, None, 5, text="a"),
    ]
    deltas = [u for _, u in per_event_units("unique_count_agg", uniques)]
    assert deltas == [D(1), D(0), D(1), D(-1), D(1)]
    prior = UniqueCountState.empty().add(point(0, None, 0, text="a"))
    assert [u for _, u in per_event_units("unique_count_agg", uniques[:1], prior)] == [D(0)]
    with pytest.raises(ValueError, match="pay in advance"):
        per_event_units("max_agg", events)


def test_from_json_rejects_wrong_type() -> None:
    with pytest.raises(ValueError, match="expected"):
        SumState.from_json(CountState().to_json())


# --- reference implementations (recompute from raw events) -----------------------------------


def reference(kind: AggregationType, events: list[EventPoint]) -> D:
    ordered = sorted(events, key=lambda p: p.order_key)
    numeric = [p for p in ordered if p.value is not None]
    if kind is AggregationType.COUNT:
        return D(len(events))
    if kind is AggregationType.SUM:
        return sum((p.value for p in numeric), D(0))
    if kind is AggregationType.MAX:
        return max((p.value for p in numeric), default=D(0))
    if kind is AggregationType.LATEST:
        return max(numeric[-1].value, D(0)) if numeric else D(0)
    if kind is AggregationType.UNIQUE_COUNT:
        return _lago_unique_count(ordered)
    return _step_integral(numeric)


def _lago_unique_count(ordered: list[EventPoint]) -> D:
    """Lago's SQL: LAG(operation, 'remove') per value; equal -> 0, add -> +1, remove -> -1."""
    previous: dict[str, str] = {}
    total = 0
    for p in ordered:
        operation = p.properties.get("operation_type", "add")
        if p.text is None or operation not in {"add", "remove"}:
            continue
        if previous.get(p.text, "remove") != operation:
            total += 1 if operation == "add" else -1
        previous[p.text] = operation
    return D(total)


def _step_integral(numeric: list[EventPoint]) -> D:
    """Walk the level through time, level x seconds, then divide (Lago's window SQL)."""
    from tallyflow.models.rating.aggregation import epoch_seconds

    level, area = D(0), D(0)
    cursor = epoch_seconds(MONTH.start)
    for p in numeric:
        now = epoch_seconds(p.timestamp)
        area += level * (now - cursor)
        level += p.value
        cursor = now
    area += level * (epoch_seconds(MONTH.end) - cursor)
    return area


values = st.one_of(
    st.none(), st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False)
)


@st.composite
def event_lists(draw: st.DrawFn) -> list[EventPoint]:
    count = draw(st.integers(min_value=0, max_value=30))
    events = []
    for seq in range(count):
        value = draw(values)
        text = draw(st.sampled_from(["a", "b", "c", "d", None]))
        operation = draw(st.sampled_from([None, "add", "remove", "bogus"]))
        events.append(
            EventPoint(
                timestamp=T0 + timedelta(microseconds=draw(st.integers(0, 30 * 86400 * 10**6 - 1))),
                seq=seq,
                value=value,
                properties={} if operation is None else {"operation_type": operation},
                text=text,
            )
        )
    return events


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(AggregationType)),
    event_lists(),
    st.randoms(use_true_random=False),
)
def test_fold_in_any_split_and_order_equals_fold_all(
    kind: AggregationType, events: list[EventPoint], rng: object
) -> None:
    whole = empty_state(kind).fold(events)
    shuffled = list(events)
    rng.shuffle(shuffled)
    cuts = sorted(rng.randint(0, len(shuffled)) for _ in range(3))
    chunks = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    parts = []
    for chunk in chunks:
        state = empty_state(kind)
        for p in chunk:
            state = state.add(p)
        # the DB layer stores states as jsonb between batches
        parts.append(state_from_json(json.loads(json.dumps(state.to_json()))))
    rng.shuffle(parts)
    merged = merge_all(kind, parts)
    assert merged == whole
    assert merged.events_count + merged.unbillable_count == len(events)
    # state result equals recomputation from the raw events
    if kind is AggregationType.WEIGHTED_SUM:
        assert _integral(merged) == reference(kind, events)
    else:
        assert merged.result() == reference(kind, events)


def _integral(state: WeightedSumState) -> D:
    """The state's exact area (result x length), to compare without the final division."""
    from tallyflow.models.rating.aggregation import epoch_seconds

    return epoch_seconds(MONTH.end) * state.variation - state.moment


@settings(max_examples=100, deadline=None)
@given(event_lists())
def test_weighted_sum_result_matches_step_integration(events: list[EventPoint]) -> None:
    state = WeightedSumState.empty().fold(events)
    area = reference(AggregationType.WEIGHTED_SUM, events)
    expected = area / MONTH.length_seconds
    assert abs(state.result(MONTH) - expected) <= D("1E-20")
