from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallyflow.models.rating.aggregation import EventPoint, SumState
from tallyflow.models.rating.charge_models import compute_charge
from tallyflow.models.rating.filters import (
    ALL_FILTER_VALUES,
    MetricFilter,
    assign_bucket,
    bucket_states,
    charge_filter_from_values,
    group_key,
    metric_filter_key,
    properties_as_text,
    property_text,
)

METRIC = (
    MetricFilter("model", ("mistral-small", "mistral-medium", "mistral-large")),
    MetricFilter("type", ("input", "output")),
)


def cf(values: dict[str, list[str]]):
    return charge_filter_from_values(values, METRIC)


def bucket_of(filters):
    """The assignment the rating memoises (``ChargeInfo.bucket_of``), unmemoised."""
    return lambda key: assign_bucket(filters, dict(key))


MISTRAL = [
    cf({"model": ["mistral-small"], "type": ["input"]}),
    cf({"model": ["mistral-small"], "type": ["output"]}),
    cf({"model": ["mistral-large"], "type": ["input"]}),
    cf({"model": ["mistral-large"], "type": ["output"]}),
]


@pytest.mark.parametrize(
    ("properties", "bucket"),
    [
        ({"model": "mistral-small", "type": "input"}, 0),
        ({"model": "mistral-small", "type": "output"}, 1),
        ({"model": "mistral-large", "type": "output", "extra": "x"}, 3),
        ({"model": "mistral-medium", "type": "input"}, None),
        ({"model": "mistral-small"}, None),
        ({}, None),
        ({"model": "MISTRAL-SMALL", "type": "input"}, None),
    ],
)
def test_mistral_buckets(properties: dict[str, str], bucket: int | None) -> None:
    assert assign_bucket(MISTRAL, properties) == bucket


def test_most_specific_wins_over_fewer_keys() -> None:
    broad = cf({"model": ["mistral-small", "mistral-large"]})
    narrow = cf({"model": ["mistral-small"], "type": ["input"]})
    filters = [broad, narrow]
    assert assign_bucket(filters, {"model": "mistral-small", "type": "input"}) == 1
    assert assign_bucket(filters, {"model": "mistral-small", "type": "output"}) == 0
    assert assign_bucket(filters, {"model": "mistral-large", "type": "input"}) == 0


def test_subset_values_win_on_same_keys_and_identical_goes_to_first() -> None:
    wide = cf({"model": ["mistral-small", "mistral-large"]})
    subset = cf({"model": ["mistral-small"]})
    assert assign_bucket([wide, subset], {"model": "mistral-small"}) == 1
    assert assign_bucket([wide, subset], {"model": "mistral-large"}) == 0
    twin = cf({"model": ["mistral-small"]})
    assert assign_bucket([subset, twin], {"model": "mistral-small"}) == 0


def test_all_filter_values_expand_to_metric_values() -> None:
    every_model = cf({"model": [ALL_FILTER_VALUES]})
    assert every_model.values["model"] == frozenset(METRIC[0].values)
    assert assign_bucket([every_model], {"model": "mistral-medium"}) == 0
    assert assign_bucket([every_model], {"model": "gpt"}) is None
    assert assign_bucket([every_model], {"type": "input"}) is None


def test_properties_compared_as_text() -> None:
    assert property_text(True) == "true"
    assert property_text(3) == "3"
    assert property_text(D("1.50")) == "1.50"
    assert property_text(None) is None and property_text({"a": 1}) is None
    assert properties_as_text({"n": 2, "x": None, "s": "a"}) == {"n": "2", "s": "a"}
    numeric = charge_filter_from_values({"region": ["1"]}, [MetricFilter("region", ("1", "2"))])
    assert assign_bucket([numeric], properties_as_text({"region": 1})) == 0


def test_metric_filter_key_bounds_unknown_values() -> None:
    key = metric_filter_key(METRIC, {"type": "input", "model": "gpt-4", "user": "u1"})
    assert key == (("model", None), ("type", "input"))


def test_group_key() -> None:
    assert group_key(["region", "tier"], {"region": "eu"}) == ("eu", None)
    assert group_key([], {"region": "eu"}) == ()


def test_bucket_states_rebucket_after_folding_without_events() -> None:
    stamp = datetime(2024, 3, 1, tzinfo=UTC)
    rows = []
    for seq, (model, kind, tokens) in enumerate(
        [
            ("mistral-small", "input", 2_000_000),
            ("mistral-small", "input", 1),
            ("mistral-medium", "output", 5),
            ("mistral-large", "output", 7),
        ]
    ):
        props = {"model": model, "type": kind, "tokens": str(tokens), "region": "eu"}
        p = EventPoint.from_event(timestamp=stamp, seq=seq, properties=props, field_name="tokens")
        rows.append(
            (metric_filter_key(METRIC, p.properties), group_key(["region"], p.properties), p)
        )
    states = [(fk, gk, SumState.empty().add(p)) for fk, gk, p in rows]
    buckets = bucket_states(bucket_of(MISTRAL), states, SumState.merge)
    assert buckets[0][("eu",)].result() == 2_000_001
    assert buckets[None][("eu",)].result() == 5
    assert buckets[3][("eu",)].result() == 7
    amount = compute_charge(
        "package",
        {"amount": "1", "free_units": 0, "package_size": 1000000},
        buckets[0][("eu",)].result(),
    )
    assert amount.to_fee("USD").amount_cents == 300
    # a charge's filters change: same stored states, new buckets
    only_small = [cf({"model": ["mistral-small"]})]
    rebucketed = bucket_states(bucket_of(only_small), states, SumState.merge)
    assert rebucketed[0][("eu",)].result() == 2_000_001
    assert rebucketed[None][("eu",)].result() == 12


values_of = {f.key: f.values for f in METRIC}


@st.composite
def charge_filters(draw: st.DrawFn):
    count = draw(st.integers(min_value=0, max_value=5))
    filters = []
    for _ in range(count):
        keys = draw(st.lists(st.sampled_from(list(values_of)), min_size=1, unique=True))
        filters.append(
            cf(
                {
                    key: draw(
                        st.one_of(
                            st.just([ALL_FILTER_VALUES]),
                            st.lists(st.sampled_from(values_of[key]), min_size=1, unique=True),
                        )
                    )
                    for key in keys
                }
            )
        )
    return filters


event_properties = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([*values_of["model"], "other"]),
        "type": st.sampled_from([*values_of["type"], "other"]),
    },
)


@settings(max_examples=200, deadline=None)
@given(charge_filters(), st.lists(st.tuples(event_properties, st.integers(0, 1000)), max_size=20))
def test_buckets_partition_the_charge(filters, events) -> None:
    totals: dict[int | None, int] = {}
    for properties, value in events:
        bucket = assign_bucket(filters, properties)
        assert bucket is None or filters[bucket].matches(properties)
        if bucket is None:
            assert not any(f.matches(properties) for f in filters)
        totals[bucket] = totals.get(bucket, 0) + value
    assert sum(totals.values()) == sum(value for _, value in events)
    # assigning after folding by metric filter key gives the same buckets
    stamp = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [
        (
            metric_filter_key(METRIC, properties),
            (),
            SumState.empty().add(EventPoint(stamp, seq, D(value))),
        )
        for seq, (properties, value) in enumerate(events)
    ]
    folded = bucket_states(bucket_of(filters), rows, SumState.merge)
    assert {b: int(g[()].result()) for b, g in folded.items()} == totals


@pytest.mark.parametrize(("display", "values", "shown"), [
    # spec/models/charge_filter_spec.rb "#display_name"
    ("Visa cards", {"card": ["visa"]}, "Visa cards"),
    (None, {"card": ["visa"]}, "visa"),
    (None, {"type": ["output"], "model": ["gpt-4o-mini"]}, "gpt-4o-mini, output"),
    (None, {"model": ["a", "b"], "type": ["__ALL_FILTER_VALUES__"]}, "a, b, type"),
    ("", {"other": ["x"], "model": ["m"]}, "m, x"),
], ids=["display-name", "values", "metric-key-order", "all-values-key", "undeclared-last"])
def test_filter_display_name_is_its_values_when_it_has_none(
    display: str | None, values: dict[str, list[str]], shown: str
) -> None:
    from tallyflow.models.rating.filters import MetricFilter, filter_display_name

    metric = (MetricFilter("model", ("gpt-4o-mini", "a", "b", "m")),
              MetricFilter("type", ("input", "output")))
    assert filter_display_name(display, values, metric) == shown
