"""What a valid event is and why a record is not one: pure tests of ``tallyflow.models.events``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tallyflow.models.events import (
    EPOCH,
    MAX_ID_LENGTH,
    MAX_PROPERTIES_BYTES,
    Reason,
    Rejection,
    TimeBounds,
    _validate_carefully,
    differing_properties,
    from_cloudevent,
    has_nul_escape,
    is_plain_decimal,
    parse_timestamp,
    validate_record,
)
from tallyflow.models.mappings import CLOUDEVENTS, LAGO
from tallyflow.tasks.ingest import loads_exact

WRITTEN_AT = datetime(2025, 11, 25, tzinfo=UTC)
BOUNDS = TimeBounds(written_at=WRITTEN_AT)
LATEST = WRITTEN_AT + timedelta(days=1)  # 2025-11-26T00:00:00Z
LATEST_EPOCH = 1_764_115_200
BASE_TS = 1_764_000_000  # 2025-11-24T16:00:00Z
BASE = datetime(2025, 11, 24, 16, tzinfo=UTC)
PROPS = {"tokens": 1000, "model": "mistral-small", "type": "input"}


def record(**overrides: Any) -> dict[str, Any]:
    """A valid Lago event; an override of ``...`` removes the field."""
    body: dict[str, Any] = {
        "transaction_id": "tx-1",
        "external_subscription_id": "sub_acme_001",
        "code": "mistral_tokens",
        "timestamp": BASE_TS,
        "properties": dict(PROPS),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def reason_of(result: Any) -> tuple[str, str | None]:
    assert isinstance(result, Rejection), result
    assert result.message
    return result.reason.value, result.field


# --------------------------------------------------------------------------------------------
# Whole records
# --------------------------------------------------------------------------------------------


def test_a_valid_record_becomes_a_loadable_tuple() -> None:
    assert validate_record(record(), BOUNDS) == (
        "tx-1",
        "sub_acme_001",
        "mistral_tokens",
        BASE,
        '{"tokens":1000,"model":"mistral-small","type":"input"}',
        None,
    )


@pytest.mark.parametrize(
    "value",
    [[], [record()], "event", None, 42, 1.5, True],
    ids=["empty-list", "list-of-event", "string", "null", "int", "float", "bool"],
)
def test_not_an_object(value: Any) -> None:
    assert reason_of(validate_record(value, BOUNDS)) == ("not_an_object", None)


def test_the_first_broken_field_is_reported_in_field_order() -> None:
    broken = record(transaction_id=1, code="", timestamp="nope", properties=[])
    assert reason_of(validate_record(broken, BOUNDS)) == ("wrong_type", "transaction_id")
    broken = record(code="", timestamp="nope", properties=[])
    assert reason_of(validate_record(broken, BOUNDS)) == ("empty_value", "code")
    broken = record(timestamp="nope", properties=[], precise_total_amount_cents="x")
    assert reason_of(validate_record(broken, BOUNDS)) == ("invalid_timestamp", "timestamp")
    broken = record(properties=[], precise_total_amount_cents="x")
    assert reason_of(validate_record(broken, BOUNDS)) == ("wrong_type", "properties")


def test_every_reason_code_is_covered_here_or_by_the_readers() -> None:
    # invalid_json, record_too_large and column_count come from the readers (test_readers.py);
    # conflicting_duplicate from the load (tests/tasks/ingest/test_ingest_order.py); archived_period
    # from the archive horizon at ingest (tests/tasks/archive/test_archive.py); the others are
    # produced by validate_record in the tables below.
    assert {r.value for r in Reason} == {
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "empty_value",
        "too_long",
        "nul_character",
        "invalid_timestamp",
        "timestamp_without_zone",
        "timestamp_out_of_range",
        "invalid_number",
        "number_out_of_range",
        "properties_too_large",
        "record_too_large",
        "column_count",
        "conflicting_duplicate",
        "archived_period",
    }


HORIZON = datetime(2025, 11, 24, 16, 0, 0, 500_000, tzinfo=UTC)  # half a second after BASE_TS
ARCHIVED = TimeBounds(written_at=WRITTEN_AT, archived_before=HORIZON)


@pytest.mark.parametrize(("timestamp", "accepted"), [
    (BASE_TS - 1, False),              # fast path (epoch int), before the horizon
    (BASE_TS, False),                  # the same second, half a second before it
    (BASE_TS + 1, True),               # after it
    ("2025-11-24T16:00:00.499999Z", False),
    ("2025-11-24T16:00:00.5Z", True),  # at the horizon: kept (the archive takes what is before)
    ("1764000000.6", True),
])
def test_events_before_the_archive_horizon_are_archived_period(
    timestamp: Any, accepted: bool
) -> None:
    result = validate_record(record(timestamp=timestamp), ARCHIVED)
    if accepted:
        assert not isinstance(result, Rejection), result
    else:
        assert reason_of(result) == ("archived_period", "timestamp")
        assert "tallyflow archive" in result.message  # type: ignore[union-attr]
    assert not isinstance(validate_record(record(timestamp=timestamp), BOUNDS), Rejection)


# --------------------------------------------------------------------------------------------
# The three text fields
# --------------------------------------------------------------------------------------------

TEXT_FIELDS = ("transaction_id", "external_subscription_id", "code")
TEXT_CASES = [
    ("absent", ..., "missing_field"),
    ("null", None, "missing_field"),
    ("int", 12345, "wrong_type"),
    ("float", 1.5, "wrong_type"),
    ("bool", True, "wrong_type"),
    ("list", ["tx"], "wrong_type"),
    ("object", {"id": "tx"}, "wrong_type"),
    ("empty", "", "empty_value"),
    ("spaces", "   ", "empty_value"),
    ("tab-newline", "\t\n", "empty_value"),
    ("256-chars", "x" * (MAX_ID_LENGTH + 1), "too_long"),
    ("256-emoji", "😀" * (MAX_ID_LENGTH + 1), "too_long"),
    ("nul", "tx\x00", "nul_character"),
    ("nul-only", "\x00", "nul_character"),
]


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize(
    ("value", "reason"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_text_field_rejections(field: str, value: Any, reason: str) -> None:
    assert reason_of(validate_record(record(**{field: value}), BOUNDS)) == (reason, field)


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "x" * MAX_ID_LENGTH,
        "😀" * MAX_ID_LENGTH,
        " padded ",
        "'; drop table events; --",
        "a\tb\nc",
        "ünï-交易-👨‍👩‍👧",
    ],
    ids=["255-chars", "255-emoji", "padded", "sql", "tab-newline", "unicode"],
)
def test_text_field_accepted_exactly(field: str, value: str) -> None:
    result = validate_record(record(**{field: value}), BOUNDS)
    assert not isinstance(result, Rejection)
    assert result[TEXT_FIELDS.index(field)] == value


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------

TIMESTAMPS_OK = [
    ("epoch-int", BASE_TS, BASE),
    ("epoch-zero", 0, EPOCH),
    ("epoch-float-fraction", BASE_TS + 0.5, BASE + timedelta(milliseconds=500)),
    ("epoch-decimal", Decimal(f"{BASE_TS}.123456"), BASE + timedelta(microseconds=123456)),
    ("numeric-string", str(BASE_TS), BASE),
    ("numeric-string-fraction", f"{BASE_TS}.25", BASE + timedelta(milliseconds=250)),
    ("numeric-string-padded", f" {BASE_TS} ", BASE),
    ("iso-z", "2025-11-24T16:00:00Z", BASE),
    ("iso-plus-0200", "2025-11-24T18:00:00+02:00", BASE),
    ("iso-minus-0530-micros", "2025-11-24T10:30:00.5-05:30", BASE + timedelta(milliseconds=500)),
    ("iso-basic", "20251124T160000Z", BASE),
    ("aware-datetime", datetime(2025, 11, 24, 17, tzinfo=timezone(timedelta(hours=1))), BASE),
    ("exactly-at-bound-int", LATEST_EPOCH, LATEST),
    ("exactly-at-bound-iso", "2025-11-26T00:00:00Z", LATEST),
    ("exactly-1970-iso-offset", "1970-01-01T01:00:00+01:00", EPOCH),
    ("missing-is-written-at", ..., WRITTEN_AT),
    ("null-is-written-at", None, WRITTEN_AT),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in TIMESTAMPS_OK], ids=[c[0] for c in TIMESTAMPS_OK]
)
def test_timestamp_accepted(value: Any, expected: datetime) -> None:
    result = validate_record(record(timestamp=value), BOUNDS)
    assert not isinstance(result, Rejection), result
    assert result[3] == expected
    assert result[3].utcoffset() == timedelta(0)


TIMESTAMPS_REJECTED = [
    ("iso-without-zone", "2025-11-24T16:00:00", "timestamp_without_zone"),
    ("iso-space-without-zone", "2025-11-24 16:00:00", "timestamp_without_zone"),
    ("date-only", "2025-11-24", "timestamp_without_zone"),
    ("naive-datetime", datetime(2025, 11, 24, 16), "timestamp_without_zone"),
    ("garbage", "yesterday", "invalid_timestamp"),
    ("empty-string", "", "invalid_timestamp"),
    ("exponent-string", "1e5", "invalid_timestamp"),
    ("hex-string", "0x1A", "invalid_timestamp"),
    ("plus-sign-string", f"+{BASE_TS}", "invalid_timestamp"),
    ("day-out-of-month", "2025-02-30T00:00:00Z", "invalid_timestamp"),
    ("offset-over-24h", "2025-11-24T16:00:00+25:00", "invalid_timestamp"),
    ("nan-float", float("nan"), "invalid_timestamp"),
    ("nan-string", "NaN", "invalid_timestamp"),
    ("bool-true", True, "wrong_type"),
    ("bool-false", False, "wrong_type"),
    ("list", [BASE_TS], "wrong_type"),
    ("object", {"seconds": BASE_TS}, "wrong_type"),
    ("before-1970-int", -1, "timestamp_out_of_range"),
    ("before-1970-fraction", Decimal("-0.5"), "timestamp_out_of_range"),
    ("before-1970-iso", "1969-12-31T23:59:59Z", "timestamp_out_of_range"),
    ("year-1-offset", "0001-01-01T00:00:00+01:00", "timestamp_out_of_range"),
    ("year-9999-offset", "9999-12-31T23:59:59-01:00", "timestamp_out_of_range"),
    ("one-day-after-written", LATEST_EPOCH + 1, "timestamp_out_of_range"),
    ("half-second-past-bound", LATEST_EPOCH + 0.5, "timestamp_out_of_range"),
    ("microsecond-past-bound-iso", "2025-11-26T00:00:00.000001Z", "timestamp_out_of_range"),
    ("far-future-iso", "3000-01-01T00:00:00Z", "timestamp_out_of_range"),
    ("huge-float", 1e30, "timestamp_out_of_range"),
    ("huge-int", 10**30, "timestamp_out_of_range"),
    ("huge-negative-int", -(10**12), "timestamp_out_of_range"),
    ("huge-numeric-string", "9" * 40, "timestamp_out_of_range"),
    ("infinity-float", float("inf"), "timestamp_out_of_range"),
]


@pytest.mark.parametrize(
    ("value", "reason"),
    [c[1:] for c in TIMESTAMPS_REJECTED],
    ids=[c[0] for c in TIMESTAMPS_REJECTED],
)
def test_timestamp_rejected(value: Any, reason: str) -> None:
    assert reason_of(validate_record(record(timestamp=value), BOUNDS)) == (reason, "timestamp")


def test_bounds_are_relative_to_the_write_time_not_now() -> None:
    old = TimeBounds(written_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert reason_of(parse_timestamp(BASE_TS, old))[0] == "timestamp_out_of_range"
    assert parse_timestamp(None, old) == datetime(2020, 1, 1, tzinfo=UTC)
    wider = TimeBounds(written_at=datetime(2020, 1, 1, tzinfo=UTC), max_future=timedelta(days=3650))
    assert parse_timestamp(BASE_TS, wider) == BASE


def test_bound_with_a_fractional_write_time_agrees_on_both_paths() -> None:
    bounds = TimeBounds(written_at=WRITTEN_AT + timedelta(microseconds=500_000))
    assert bounds.latest_epoch == LATEST_EPOCH  # floor: the fast path compares whole seconds
    assert validate_record(record(timestamp=LATEST_EPOCH), bounds)[3] == LATEST
    assert reason_of(validate_record(record(timestamp=LATEST_EPOCH + 1), bounds))[0] == (
        "timestamp_out_of_range"
    )


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

PROPERTIES_OK = [
    ("missing", ..., "{}"),
    ("null", None, "{}"),
    ("empty", {}, "{}"),
    ("nested", {"a": {"b": [1, "2", None, True]}}, '{"a":{"b":[1,"2",null,true]}}'),
    ("empty-key", {"": ""}, '{"":""}'),
    ("decimal", {"tokens": Decimal("0.1")}, '{"tokens":0.1}'),
    ("big-int", {"tokens": 10**24}, '{"tokens":1' + "0" * 24 + "}"),
    ("big-negative-int-nested", {"a": [-(10**25 - 1)]}, '{"a":[-' + "9" * 25 + "]}"),
    ("26-decimals", {"n": Decimal("0." + "0" * 25 + "1")}, '{"n":1E-26}'),
    ("digit-strings-are-data", {"id": "1" * 40, "s": "1e400"}, '{"id":"' + "1" * 40
     + '","s":"1e400"}'),
    ("float-in-range", {"n": 1.5, "m": 1e24}, '{"n":1.5,"m":1e+24}'),
    ("u64-max", {"n": 2**64 - 1}, '{"n":18446744073709551615}'),
    ("backslash-u0000-text", {"k": "\\u0000"}, '{"k":"\\\\u0000"}'),
    (
        "sql-quotes",
        {"'; drop table events; --": 'say "hi"'},
        '{"\'; drop table events; --":"say \\"hi\\""}',
    ),
    ("tab-newline", {"k\t": "a\nb"}, '{"k\\t":"a\\nb"}'),
    ("at-size-limit", {"k": "x" * (MAX_PROPERTIES_BYTES - 8)}, None),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in PROPERTIES_OK], ids=[c[0] for c in PROPERTIES_OK]
)
def test_properties_accepted(value: Any, expected: str | None) -> None:
    result = validate_record(record(properties=value), BOUNDS)
    assert not isinstance(result, Rejection), result
    if expected is None:  # built to land exactly on the limit
        assert len(result[4].encode()) == MAX_PROPERTIES_BYTES
    else:
        assert result[4] == expected
    json.loads(result[4])


PROPERTIES_REJECTED = [
    ("list", ["tokens", 1], "wrong_type"),
    ("string", "tokens=1", "wrong_type"),
    ("number", 5, "wrong_type"),
    ("bool", True, "wrong_type"),
    ("non-string-key", {1: "a"}, "wrong_type"),
    ("not-json-value", {"k": object()}, "wrong_type"),
    ("nul-in-key", {"ke\x00y": 1}, "nul_character"),
    ("nul-in-value", {"k": "va\x00lue"}, "nul_character"),
    ("nul-nested", {"k": [{"d": "\x00"}]}, "nul_character"),
    ("backslash-then-nul", {"k": "\\\x00"}, "nul_character"),
    ("too-large", {"k": "x" * (MAX_PROPERTIES_BYTES - 7)}, "properties_too_large"),
    ("too-large-many-keys", {f"k{i}": i for i in range(10_000)}, "properties_too_large"),
]

# The number rule (models/number_rule.py): every JSON number in properties, nested too, is refused
# outside |x| < 1e25 with at most 26 digits after the point, naming where it is.
PROPERTIES_OUT_OF_RANGE = [
    ("bound", {"tokens": 10**25}, "properties.tokens"),
    ("negative-bound", {"tokens": -(10**25)}, "properties.tokens"),
    ("30-digit", {"tokens": 123456789012345678901234567890}, "properties.tokens"),
    ("1e400", {"tokens": Decimal("1E+400")}, "properties.tokens"),
    ("1e308", {"tokens": Decimal("1E+308")}, "properties.tokens"),
    ("minus-1e308", {"tokens": Decimal("-1E+308")}, "properties.tokens"),
    ("27-decimals", {"n": Decimal("0." + "0" * 26 + "1")}, "properties.n"),
    ("1e-400", {"n": Decimal("1E-400")}, "properties.n"),
    ("nested", {"a": {"b": [1, 10**30]}}, "properties.a.b[1]"),
    ("nan-decimal", {"n": Decimal("NaN")}, "properties.n"),
    ("float-1e25", {"n": 1e25}, "properties.n"),
    ("float-nan", {"n": float("nan")}, "properties.n"),
    ("float-inf", {"n": float("-inf")}, "properties.n"),
    ("float-tiny", {"n": 1e-30}, "properties.n"),
]


@pytest.mark.parametrize(
    ("value", "field"),
    [c[1:] for c in PROPERTIES_OUT_OF_RANGE],
    ids=[c[0] for c in PROPERTIES_OUT_OF_RANGE],
)
def test_properties_numbers_out_of_range(value: Any, field: str) -> None:
    result = validate_record(record(properties=value), BOUNDS)
    assert reason_of(result) == ("number_out_of_range", field)
    assert isinstance(result, Rejection)
    assert field in result.message and "1e25" in result.message


@pytest.mark.parametrize(
    ("value", "reason"),
    [c[1:] for c in PROPERTIES_REJECTED],
    ids=[c[0] for c in PROPERTIES_REJECTED],
)
def test_properties_rejected(value: Any, reason: str) -> None:
    assert reason_of(validate_record(record(properties=value), BOUNDS)) == (reason, "properties")


def test_has_nul_escape_tells_a_nul_from_the_text_backslash_u0000() -> None:
    assert has_nul_escape(b'{"k":"\\u0000"}')
    assert has_nul_escape(b'{"k":"\\\\\\u0000"}')  # an escaped backslash, then a NUL
    assert not has_nul_escape(b'{"k":"\\\\u0000"}')  # the six characters \u0000
    assert not has_nul_escape(b'{"k":"\\\\\\\\u0000"}')
    assert not has_nul_escape(b'{"k":"u0000"}')


# --------------------------------------------------------------------------------------------
# precise_total_amount_cents
# --------------------------------------------------------------------------------------------

PRECISE = [
    ("absent", ..., None),
    ("null", None, None),
    ("decimal-string", "12.5", Decimal("12.5")),
    ("int", 12, Decimal("12")),
    ("negative", "-3.25", Decimal("-3.25")),
    ("padded", " 7 ", Decimal("7")),
    ("float", 12.5, Decimal("12.5")),
    ("decimal", Decimal("0.001"), Decimal("0.001")),
    (
        "many-digits",
        "1234567890123456789012345.12345678901234567890123456",
        Decimal("1234567890123456789012345.12345678901234567890123456"),
    ),
    # the number rule (models/number_rule.py): |x| < 1e25, at most 26 digits after the point
    ("30-digit", "123456789012345678901234567890", Reason.NUMBER_OUT_OF_RANGE),
    ("bound", 10**25, Reason.NUMBER_OUT_OF_RANGE),
    ("bound-minus-1", 10**25 - 1, Decimal(10**25 - 1)),
    ("negative-bound", "-" + "9" * 26, Reason.NUMBER_OUT_OF_RANGE),
    ("27-decimals", "0." + "0" * 26 + "1", Reason.NUMBER_OUT_OF_RANGE),
    ("huge-json", Decimal("1E+400"), Reason.NUMBER_OUT_OF_RANGE),
    ("minus-1e308", Decimal("-1E+308"), Reason.NUMBER_OUT_OF_RANGE),
    ("float-1e308", 1e308, Reason.NUMBER_OUT_OF_RANGE),
    ("exponent-string", "1e3", Reason.INVALID_NUMBER),
    # JSON numbers are read from their text as Decimal: every exact number is one, whatever
    # its notation (a float 0.1 was accepted while 1e-05 was refused).
    ("json-exponent", Decimal("1E+3"), Decimal("1000")),
    ("json-small", Decimal("1E-5"), Decimal("0.00001")),
    ("json-tenth", Decimal("0.1"), Decimal("0.1")),
    ("float-tenth", 0.1, Decimal("0.1")),
    ("float-tiny", 1e-05, Decimal("0.00001")),
    ("float-binary-noise", 2.675, Decimal("2.675")),
    ("nan-decimal", Decimal("NaN"), Reason.INVALID_NUMBER),
    ("nan-float", float("nan"), Reason.INVALID_NUMBER),
    ("absurd-exponent", Decimal("1E+200"), Reason.NUMBER_OUT_OF_RANGE),
    ("empty", "", Reason.INVALID_NUMBER),
    ("comma", "1,000", Reason.INVALID_NUMBER),
    ("trailing-dot", "12.", Reason.INVALID_NUMBER),
    ("words", "twelve", Reason.INVALID_NUMBER),
    ("nan", "NaN", Reason.INVALID_NUMBER),
    ("infinity-float", float("inf"), Reason.NUMBER_OUT_OF_RANGE),
    ("minus-infinity-float", float("-inf"), Reason.NUMBER_OUT_OF_RANGE),
    ("bool", True, Reason.INVALID_NUMBER),
    ("list", [12], Reason.INVALID_NUMBER),
    ("object", {"v": 1}, Reason.INVALID_NUMBER),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in PRECISE], ids=[c[0] for c in PRECISE]
)
def test_precise_total_amount_cents(value: Any, expected: Any) -> None:
    result = validate_record(record(precise_total_amount_cents=value), BOUNDS)
    if isinstance(expected, Reason):
        assert reason_of(result) == (expected.value, "precise_total_amount_cents")
    else:
        assert not isinstance(result, Rejection), result
        assert result[5] == expected
        assert str(result[5]) == str(expected)  # not just equal: the same digits


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("0", True),
        ("-1.50", True),
        ("1e3", False),
        ("1.", False),
        (".5", False),
        ("+1", False),
        ("1\n", False),
        ("\u0661\u0662", False),  # Arabic-Indic digits: not a number to Postgres or Lago
        ("", False),
    ],
)
def test_is_plain_decimal(text: str, plain: bool) -> None:
    # fullmatch, ASCII digits: no trailing newline, no other scripts' digits
    assert is_plain_decimal(text) is plain


# --------------------------------------------------------------------------------------------
# Exact numbers from JSON text to stored JSON text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties_json", "stored"),
    [
        ('{"tokens": 0.1}', '{"tokens":0.1}'),
        ('{"tokens": 1234567890123456789012345}', '{"tokens":1234567890123456789012345}'),
        ('{"tokens": 0.30000000000000000004}', '{"tokens":0.30000000000000000004}'),
        ('{"a": 1.10, "b": [2.50, 10]}', '{"a":1.10,"b":[2.50,10]}'),
        ('{"n": -0.0}', '{"n":-0.0}'),
        ('{"n": 1e-7}', '{"n":1E-7}'),
    ],
    ids=["tenth", "25-digit-int", "beyond-double", "trailing-zeros", "negative-zero", "exponent"],
)
def test_exact_decimals_survive_loads_exact_and_validation(
    properties_json: str, stored: str
) -> None:
    line = (
        '{"transaction_id": "tx-1", "external_subscription_id": "s", "code": "c",'
        f' "timestamp": {BASE_TS}, "properties": {properties_json}}}'
    )
    result = validate_record(loads_exact(line.encode()), BOUNDS)
    assert not isinstance(result, Rejection), result
    assert result[4] == stored
    assert json.loads(result[4], parse_float=Decimal) == json.loads(
        properties_json, parse_float=Decimal
    )


# --------------------------------------------------------------------------------------------
# CloudEvents
# --------------------------------------------------------------------------------------------


def test_cloudevent_maps_onto_lago_fields() -> None:
    cloud = {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "/api",
        "type": "mistral_tokens",
        "subject": "sub_acme_001",
        "time": "2025-11-24T17:00:00+01:00",
        "datacontenttype": "application/json",
        "data": {"tokens": 5, "model": "mistral-small"},
    }
    assert from_cloudevent(cloud) == {
        "transaction_id": "ev-1",
        "external_subscription_id": "sub_acme_001",
        "code": "mistral_tokens",
        "timestamp": "2025-11-24T17:00:00+01:00",
        "properties": {"tokens": 5, "model": "mistral-small"},
    }
    assert validate_record(from_cloudevent(cloud), BOUNDS) == (
        "ev-1",
        "sub_acme_001",
        "mistral_tokens",
        BASE,
        '{"tokens":5,"model":"mistral-small"}',
        None,
    )


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ({"id": "e", "subject": "s", "type": "t"}, ("e", "s", "t", WRITTEN_AT, "{}", None)),
        ({"subject": "s", "type": "t"}, ("missing_field", "transaction_id")),
        ({"id": "e", "type": "t"}, ("missing_field", "external_subscription_id")),
        ({"id": "e", "subject": "s"}, ("missing_field", "code")),
        ({"id": "e", "subject": "s", "type": "t", "data": "x"}, ("wrong_type", "properties")),
        (
            {"id": "e", "subject": "s", "type": "t", "time": "2025-11-24T16:00:00"},
            ("timestamp_without_zone", "timestamp"),
        ),
        (["not", "an", "object"], ("not_an_object", None)),
        (None, ("not_an_object", None)),
    ],
    ids=[
        "minimal",
        "no-id",
        "no-subject",
        "no-type",
        "data-string",
        "time-no-zone",
        "list",
        "null",
    ],
)
def test_cloudevent_edge_cases(cloud: Any, expected: tuple[Any, ...]) -> None:
    result = validate_record(CLOUDEVENTS.map(cloud, CLOUDEVENTS.options({})), BOUNDS)
    if isinstance(result, Rejection):
        assert reason_of(result) == expected
    else:
        assert result == expected


def test_lago_mapping_is_the_identity() -> None:
    event = record()
    assert LAGO.map(event, LAGO.options({})) is event


# --------------------------------------------------------------------------------------------
# The fast path and the careful path agree
# --------------------------------------------------------------------------------------------

_ids = st.one_of(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["tx-1", "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "", "  ", "a\x00"]),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=2), max_size=2),
)
_timestamps = st.one_of(
    st.integers(min_value=-5, max_value=LATEST_EPOCH + 5),
    st.integers(min_value=LATEST_EPOCH - 5, max_value=LATEST_EPOCH + 5),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.decimals(allow_nan=False, places=6, min_value=-10, max_value=2 * LATEST_EPOCH),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.sampled_from(
        [
            "2025-11-24T16:00:00Z",
            "2025-11-24T16:00:00",
            "1764000000",
            "1e5",
            "",
            "nope",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            str(LATEST_EPOCH),
        ]
    ),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.just(...),
)
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.text(max_size=6),
    st.sampled_from(["\x00", "\\u0000", "\\\x00", "'; drop table events; --"]),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_properties = st.one_of(
    st.dictionaries(st.text(max_size=5), _json, max_size=4),
    st.dictionaries(st.integers(), st.integers(), max_size=2),
    st.just({"k": "x" * (MAX_PROPERTIES_BYTES - 8)}),
    st.just({"k": "x" * (MAX_PROPERTIES_BYTES - 7)}),
    st.none(),
    st.just(...),
    _json,
)
_precise = st.one_of(
    st.just(...),
    st.none(),
    st.decimals(),
    st.integers(),
    st.floats(),
    st.sampled_from(["12.5", "1e3", "", "-0.5", "abc"]),
    st.booleans(),
)


_good_ids = st.one_of(st.just("tx-1"), st.from_regex(r"[a-z0-9_\-😀 ]{0,6}[a-z]", fullmatch=True))
_good_properties = st.dictionaries(st.text(max_size=5), _json_leaf, max_size=4)


@st.composite
def _records(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(_json)  # sometimes not even an object

    def pick(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(bad if draw(st.integers(0, 5)) == 0 else good)  # mostly well-formed

    fields = {
        "transaction_id": pick(_good_ids, _ids),
        "external_subscription_id": pick(_good_ids, _ids),
        "code": pick(_good_ids, _ids),
        "timestamp": pick(st.integers(min_value=0, max_value=LATEST_EPOCH), _timestamps),
        "properties": pick(_good_properties, _properties),
        "precise_total_amount_cents": pick(st.just(...), _precise),
    }
    return {k: v for k, v in fields.items() if v is not ...}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records())
def test_fast_path_and_careful_path_agree(candidate: Any) -> None:
    fast = validate_record(candidate, BOUNDS)
    careful = _validate_carefully(candidate, BOUNDS)
    assert fast == careful
    event("rejected" if isinstance(fast, Rejection) else "accepted")
    if not isinstance(fast, Rejection):
        assert fast[3].utcoffset() == timedelta(0)
        assert EPOCH <= fast[3] <= LATEST
        json.loads(fast[4])  # always valid JSON text
        assert "\x00" not in "".join(fast[:3])


# --------------------------------------------------------------------------------------------
# Duplicates compare numbers by value
# --------------------------------------------------------------------------------------------

SAME_OR_NOT = [
    ("int-and-string", {"t": 100}, {"t": "100"}, []),
    ("int-and-decimal", {"t": 100}, {"t": Decimal("100.0")}, []),
    ("exponent", {"t": Decimal("1E+2")}, {"t": "100.00"}, []),
    ("negative-zero", {"t": 0}, {"t": "-0"}, []),
    ("nested", {"u": {"t": [1, "2"]}}, {"u": {"t": ["1.0", 2]}}, []),
    ("different-number", {"t": 100}, {"t": "101"}, ["t"]),
    ("bool-is-no-number", {"t": 1}, {"t": True}, ["t"]),
    ("null-is-not-zero", {"t": 0}, {"t": None}, ["t"]),
    ("padded-string-is-text", {"t": 100}, {"t": " 100"}, ["t"]),
    ("exponent-string-is-text", {"t": 100}, {"t": "1e2"}, ["t"]),
    ("text", {"m": "a"}, {"m": "b"}, ["m"]),
    ("missing-here", {"a": 1, "b": 2}, {"a": 1}, ["b"]),
    ("missing-there", {"a": 1}, {"b": 2, "a": 1}, ["b"]),
]


@pytest.mark.parametrize(("kept", "copy", "differ"), [c[1:] for c in SAME_OR_NOT],
                         ids=[c[0] for c in SAME_OR_NOT])
def test_differing_properties_compare_numbers_by_value(
    kept: dict[str, Any], copy: dict[str, Any], differ: list[str]
) -> None:
    assert differing_properties(kept, copy) == differ
    assert sorted(differing_properties(copy, kept)) == sorted(differ)
