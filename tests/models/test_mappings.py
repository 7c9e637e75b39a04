"""Declarative mappings, record by record: paths, subtraction, one event per field, rejects."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallyflow.models.events import Rejection
from tallyflow.models.mappings import DeclarativeMapping, Events, MappingInvalid, lookup

SPEC = {
    "name": "t",
    "transaction_id": "id",
    "external_subscription_id": "user|metadata.user_id",
    "timestamp": "created",
    "code": {"const": "llm_tokens"},
    "properties": {"model": "model", "first": "choices.0.index"},
    "constants": {"provider": "p"},
    "reject": [{"when": "error", "reason": "provider_error", "message": "failed"}],
    "each": {"fields": {
        "input": {"path": "usage.prompt", "minus": ["usage.cached"]},
        "cache_read": "usage.cached",
        "output": "usage.completion",
    }},
}
MAPPING = DeclarativeMapping.from_data(SPEC, "test")
OPTIONS = MAPPING.options({})


def _map(record: Any, **options: Any) -> Any:
    return MAPPING.map(record, MAPPING.options(options))


def _base(**extra: Any) -> dict[str, Any]:
    return {"id": "r", "user": "s", "created": 1, "model": "m",
            "usage": {"prompt": 10, "cached": 4, "completion": 2}, **extra}


@pytest.mark.parametrize(
    ("record", "types_tokens"),
    [
        (_base(), [("input", 6), ("cache_read", 4), ("output", 2)]),
        (_base(usage={"prompt": 10, "completion": 2}), [("input", 10), ("output", 2)]),
        (_base(usage={"prompt": 5, "cached": 5, "completion": 0}), [("cache_read", 5)]),
        (_base(usage={}), []),  # zero events: neither rejected nor billed
        (_base(usage={"prompt": "12", "completion": Decimal("0.5")}),
         [("input", 12), ("output", Decimal("0.5"))]),
    ],
)
def test_one_event_per_listed_field(record: dict, types_tokens: list) -> None:
    result = _map(record)
    assert type(result) is Events
    assert [(e["properties"]["type"], e["properties"]["tokens"]) for e in result] == types_tokens
    assert [e["transaction_id"] for e in result] == [f"r:{t}" for t, _ in types_tokens]
    for event in result:
        assert event["external_subscription_id"] == "s" and event["code"] == "llm_tokens"
        assert event["properties"]["provider"] == "p" and event["properties"]["model"] == "m"


@pytest.mark.parametrize(
    ("record", "reason", "field"),
    [
        (_base(error={"code": "x"}), "provider_error", "error"),
        (_base(user=None), "missing_field", "user|metadata.user_id"),
        ({k: v for k, v in _base().items() if k != "id"}, "missing_field", "id"),
        (_base(id="  "), "empty_value", "id"),
        (_base(usage={"prompt": "lots"}), "invalid_number", "usage.prompt"),
        (_base(usage={"prompt": 1, "cached": True}), "invalid_number", "usage.cached"),
        (_base(usage={"completion": -3}), "invalid_number", "usage.completion"),
        ([1, 2], "not_an_object", None),
    ],
)
def test_rejections_carry_the_mapping_reason(record: Any, reason: str, field: str) -> None:
    result = _map(record)
    assert isinstance(result, Rejection)
    assert (str(result.reason), result.field) == (reason, field)


def test_false_error_does_not_reject_and_alternatives_apply() -> None:
    result = _map(_base(error=False, user=None, metadata={"user_id": "via-meta"},
                        choices=[{"index": 7}]))
    assert type(result) is Events
    assert result[0]["external_subscription_id"] == "via-meta"
    assert result[0]["properties"]["first"] == 7


def test_options_override_code_and_paths() -> None:
    result = _map(_base(customer="c9"), code="tokens", external_subscription_id="customer")
    assert {e["code"] for e in result} == {"tokens"}
    assert {e["external_subscription_id"] for e in result} == {"c9"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": None}, "code"),
        ({"each": {"fields": {}}}, "each.fields"),
        ({"reject": [{"when": "e", "reason": "Bad Reason", "message": "m"}]}, "reject.0.reason"),
        ({"code": {"path": "a", "const": "b"}}, "code"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_mapping_names_the_place(change: dict, message: str) -> None:
    spec = {**SPEC, **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(MappingInvalid) as raised:
        DeclarativeMapping.from_data(spec, "m.yaml")
    assert str(raised.value).startswith("m.yaml: ")
    assert f" {message}: " in str(raised.value) or f"; {message}: " in str(raised.value)


def test_lookup_paths() -> None:
    record = {"a": {"b": [{"c": 1}, {"c": None}]}, "z": 0, "n": {"0": "zero"}}
    assert lookup(record, "a.b.0.c") == 1
    assert lookup(record, "n.0") == "zero"  # a digit key of an object is a key
    assert lookup(record, "a.b.1.c|z") == 0
    assert lookup(record, "a.b.9.c|a.x") is not None  # missing: the sentinel, not a value
    assert lookup(record, "a.b.9.c|a.x") is lookup(record, "nothing")


@given(
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.dictionaries(st.sampled_from(["prompt", "cached", "completion"]),
                    st.integers(min_value=0, max_value=10**12)),
    st.integers(min_value=0, max_value=2**31),
)
def test_derived_ids_depend_on_the_record_only(txn: str, usage: dict, created: int) -> None:
    """Replaying a record (any object, any position) gives the same events: dedup holds; the
    input never counts cached tokens twice."""
    record = _base(id=txn, usage=usage, created=created)
    first, again = _map(record), _map(dict(record))
    if isinstance(first, Rejection):
        assert usage.get("cached", 0) > usage.get("prompt", 0)  # input would be negative
        return
    assert first == again
    ids = [e["transaction_id"] for e in first]
    assert len(set(ids)) == len(ids)
    total = sum(e["properties"]["tokens"] for e in first
                if e["properties"]["type"] in ("input", "cache_read"))
    if "prompt" in usage:
        assert total == usage["prompt"]


KEEP_ZERO = DeclarativeMapping.from_data(
    {**SPEC, "each": {**SPEC["each"], "skip_zero": False}}, "test")


@pytest.mark.parametrize(
    ("usage", "skipping", "keeping"),
    [
        ({"prompt": 0, "cached": 0, "completion": 0}, [],
         [("input", 0), ("cache_read", 0), ("output", 0)]),
        ({"prompt": 3, "completion": 0}, [("input", 3)], [("input", 3), ("output", 0)]),
        ({}, [], []),  # absent counts give no event either way: the record is empty (no_usage)
        ({"prompt": None, "completion": None}, [], []),
    ],
)
def test_skip_zero_decides_zero_counts_never_absent_ones(
    usage: dict, skipping: list, keeping: list
) -> None:
    """``skip_zero: false`` keeps a count of zero as a zero-valued event; an absent or null
    count gives no event whatever it says (docs/data-quality.md, "Every record accounted for")."""
    for mapping, expected in ((MAPPING, skipping), (KEEP_ZERO, keeping)):
        result = mapping.map(_base(usage=usage), mapping.options({}))
        assert type(result) is Events
        assert [(e["properties"]["type"], e["properties"]["tokens"]) for e in result] == expected
