"""Per-format readers on in-memory bytes: rows, row numbers, raw text, chunks, object errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tallyflow.models.events import MAX_RECORD_BYTES, Rejection, TimeBounds, validate_record
from tallyflow.tasks.ingest.readers import (
    READERS,
    ObjectUnreadable,
    detect,
    loads_exact,
    read_csv,
    read_json,
    read_jsonl,
    read_parquet,
)

BOUNDS = TimeBounds(written_at=datetime(2025, 11, 25, tzinfo=UTC))
BASE_TS = 1_764_000_000
BASE = datetime(2025, 11, 24, 16, tzinfo=UTC)
SUB = "sub_acme_001"


def ev(i: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": f"tx-{i}",
        "external_subscription_id": SUB,
        "code": "mistral_tokens",
        "timestamp": BASE_TS + i,
        "properties": {"tokens": i},
    }
    body.update(overrides)
    return body


def line(record: Any) -> bytes:
    return orjson.dumps(record) + b"\n"


def read(reader: Any, data: bytes, chunk_size: int = 1000) -> list[tuple[int, Any, Any]]:
    return [row for chunk in reader(io.BytesIO(data), chunk_size) for row in chunk]


def chunk_sizes(reader: Any, data: bytes, chunk_size: int) -> list[int]:
    return [len(chunk) for chunk in reader(io.BytesIO(data), chunk_size)]


def reason(value: Any) -> tuple[str, str | None]:
    assert isinstance(value, Rejection), value
    return value.reason.value, value.field


def valid(record: Any) -> tuple[Any, ...]:
    result = validate_record(record, BOUNDS)
    assert not isinstance(result, Rejection), result
    return result


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", ("jsonl", None)),
        ("dir/a.JSONL", ("jsonl", None)),
        ("a.jsonl.gz", ("jsonl", "gzip")),
        ("a.ndjson", ("jsonl", None)),
        ("a.ndjson.zst", ("jsonl", "zstd")),
        ("a.json.zstd", ("json", "zstd")),
        ("a.json", ("json", None)),
        ("a.csv", ("csv", None)),
        ("a.csv.gzip", ("csv", "gzip")),
        ("a.parquet", ("parquet", None)),
        ("a.pq", ("parquet", None)),
        ("README.md", (None, None)),
        ("a.txt.gz", (None, "gzip")),
        ("jsonl", (None, None)),
        ("a.jsonl.bak", (None, None)),
        ("s3://bucket/x..y/with space.csv", ("csv", None)),
    ],
)
def test_detect(name: str, expected: tuple[str | None, str | None]) -> None:
    assert detect(name) == expected


def test_every_format_has_a_reader() -> None:
    assert set(READERS) == {"jsonl", "json", "csv", "parquet"}


# --------------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------------


def test_jsonl_row_numbers_are_line_numbers_and_blank_lines_are_skipped() -> None:
    data = line(ev(1)) + b"\n   \n" + line(ev(4)) + b"\r\n" + line(ev(6)).rstrip(b"\n")
    rows = read(read_jsonl, data)
    assert [(n, r["transaction_id"]) for n, r, _ in rows] == [(1, "tx-1"), (4, "tx-4"), (6, "tx-6")]
    assert rows[0][2] == line(ev(1))  # raw: the line as it came
    assert rows[2][2] == line(ev(6)).rstrip(b"\n")  # no newline at the end of the object


def test_jsonl_crlf_lines() -> None:
    data = line(ev(1)).replace(b"\n", b"\r\n") + line(ev(2)).replace(b"\n", b"\r\n")
    assert [valid(r)[0] for _, r, _ in read(read_jsonl, data)] == ["tx-1", "tx-2"]


def test_jsonl_bad_rows_are_rejections_with_their_raw_text() -> None:
    data = line(ev(1)) + b'{"transaction_id": "tx-2",\n' + b"[1, 2]\n" + b"{} {}\n" + line(ev(5))
    rows = read(read_jsonl, data)
    assert [(n, reason(r) if isinstance(r, Rejection) else "ok") for n, r, _ in rows] == [
        (1, "ok"),
        (2, ("invalid_json", None)),
        (3, "ok"),  # decoded; validation says not_an_object
        (4, ("invalid_json", None)),
        (5, "ok"),
    ]
    assert rows[1][2] == b'{"transaction_id": "tx-2",\n'
    assert reason(validate_record(rows[2][1], BOUNDS)) == ("not_an_object", None)


def test_jsonl_line_over_the_record_limit_is_rejected_without_parsing() -> None:
    huge = line(ev(2, properties={"blob": "x" * MAX_RECORD_BYTES}))
    rows = read(read_jsonl, line(ev(1)) + huge + line(ev(3)))
    assert [n for n, _, _ in rows] == [1, 2, 3]
    assert reason(rows[1][1]) == ("record_too_large", None)
    assert rows[1][2] == huge


def test_jsonl_line_separator_inside_a_string_does_not_split_the_line() -> None:
    rows = read(read_jsonl, line(ev(1, transaction_id="a\u2028b\u0085c")))
    assert valid(rows[0][1])[0] == "a\u2028b\u0085c"


def test_jsonl_numbers_stay_exact() -> None:
    data = b'{"properties": {"a": 0.1, "b": 123456789012345678901234567890, "c": 7}}\n'
    ((_, record, _),) = read(read_jsonl, data)
    assert record["properties"] == {
        "a": Decimal("0.1"),
        "b": 123456789012345678901234567890,
        "c": 7,
    }
    assert type(record["properties"]["a"]) is Decimal


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_jsonl_non_finite_numbers_are_invalid_json(literal: bytes) -> None:
    ((_, record, _),) = read(read_jsonl, b'{"properties": {"v": ' + literal + b"}}\n")
    assert reason(record) == ("invalid_json", None)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"1E+99999", b"1e-400"])
def test_jsonl_numbers_beyond_a_double_are_read_exactly(literal: bytes) -> None:
    """JSON all the same: read as the exact Decimal, for the number rule to refuse with its
    own reason (not ``invalid_json``, which would say the line is broken)."""
    ((_, record, _),) = read(read_jsonl, b'{"properties": {"v": ' + literal + b"}}\n")
    assert record["properties"]["v"] == Decimal(literal.decode())


@pytest.mark.parametrize("line", [
    b'{"properties": {"v": 1e400, "w": NaN}}',
    b'{"transaction_id": "\\ud800", "properties": {"v": 1e400}}',   # lone surrogate
    b'{"properties": {"\\udfff": 1, "v": 1e400}}',
    b'{"v": 1e400, "n": ' + b"1" * 5000 + b"}",                     # past Python's int limit
])
def test_jsonl_beyond_a_double_next_to_broken_json_stays_invalid(line: bytes) -> None:
    """Python's reader, used only for numbers beyond a double, refuses what orjson refuses."""
    ((_, record, _),) = read(read_jsonl, line + b"\n")
    assert reason(record) == ("invalid_json", None)


def test_a_timestamp_with_a_huge_exponent_is_refused_at_once() -> None:
    ((_, record, _),) = read(read_jsonl, b'{"transaction_id": "t", "external_subscription_id":'
                             b' "s", "code": "c", "timestamp": 1e999999999}\n')
    assert reason(validate_record(record, BOUNDS)) == ("timestamp_out_of_range", "timestamp")


def test_jsonl_too_deep_is_invalid_json_not_a_crash() -> None:
    deep = b'{"p": ' + b"[" * 1000 + b"0.5" + b"]" * 1000 + b"}\n"
    deeper = b'{"p": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    assert [reason(r) for _, r, _ in read(read_jsonl, deep + deeper)] == [
        ("invalid_json", None),
        ("invalid_json", None),
    ]


@pytest.mark.parametrize(
    "data",
    [
        line(ev(1)) + b'{"transaction_id": "caf\xe9"}\n',
        line(ev(1)) + b"\xff\xfe not json\n",
        b'{"blob": "' + b"\xe9" * (MAX_RECORD_BYTES + 1) + b'"}\n',
    ],
    ids=["latin1-in-json", "garbage", "latin1-in-huge-line"],
)
def test_jsonl_not_utf8_is_unreadable(data: bytes) -> None:
    with pytest.raises(ObjectUnreadable, match="not UTF-8"):
        read(read_jsonl, data)


def test_jsonl_byte_order_mark_is_ignored() -> None:
    rows = read(read_jsonl, b"\xef\xbb\xbf" + line(ev(1)) + line(ev(2)))
    assert [(n, valid(r)[0]) for n, r, _ in rows] == [(1, "tx-1"), (2, "tx-2")]


def test_jsonl_empty_object_has_no_rows() -> None:
    assert read(read_jsonl, b"") == []
    assert read(read_jsonl, b"\n\n") == []


# --------------------------------------------------------------------------------------------
# JSON documents
# --------------------------------------------------------------------------------------------


def test_json_array() -> None:
    rows = read(read_json, orjson.dumps([ev(1), ev(2), 3]))
    assert [(n, raw) for n, _, raw in rows] == [(1, None), (2, None), (3, None)]
    assert valid(rows[0][1])[0] == "tx-1"
    assert reason(validate_record(rows[2][1], BOUNDS)) == ("not_an_object", None)


def test_json_lago_batch_body() -> None:
    body = {"events": [ev(1), ev(2, timestamp="nope"), ev(3)]}
    rows = read(read_json, orjson.dumps(body))
    assert [n for n, _, _ in rows] == [1, 2, 3]
    assert reason(validate_record(rows[1][1], BOUNDS)) == ("invalid_timestamp", "timestamp")


def test_json_lago_single_event_body() -> None:
    ((n, record, _),) = read(read_json, orjson.dumps({"event": ev(1)}))
    assert (n, valid(record)[0]) == (1, "tx-1")


@pytest.mark.parametrize(
    "document",
    [{"data": [ev(1)]}, {"events": "x"}, {"events": {"a": ev(1)}}, {}, 42, "events", None],
    ids=["other-key", "events-string", "events-object", "empty-object", "number", "string", "null"],
)
def test_json_neither_array_nor_batch_is_unreadable(document: Any) -> None:
    with pytest.raises(ObjectUnreadable, match="must be an array of events"):
        read(read_json, orjson.dumps(document))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"[{", "not valid JSON"),
        (b'[{"a": NaN}]', "not valid JSON"),
        (b'["caf\xe9"]', "not UTF-8"),
    ],
    ids=["empty", "truncated", "nan", "latin1"],
)
def test_json_broken_document_is_unreadable(data: bytes, message: str) -> None:
    with pytest.raises(ObjectUnreadable, match=message):
        read(read_json, data)


def test_json_byte_order_mark_is_ignored() -> None:
    rows = read(read_json, b"\xef\xbb\xbf" + orjson.dumps([ev(1)]))
    assert valid(rows[0][1])[0] == "tx-1"


def test_json_numbers_stay_exact() -> None:
    ((_, record, _),) = read(read_json, b'[{"properties": {"t": 0.1, "b": 100000000000000000000}}]')
    assert record["properties"] == {"t": Decimal("0.1"), "b": 10**20}


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

HEADER = b"transaction_id,external_subscription_id,code,timestamp"


def test_csv_properties_columns_are_folded_into_an_object() -> None:
    data = (
        HEADER + b",properties.tokens,properties.model\n"
        b"tx-1,sub,mistral_tokens,1764000000,1000,mistral-small\n"
        b"tx-2,sub,mistral_tokens,2025-11-24T16:00:00Z,,mistral-large\n"
    )
    rows = read(read_csv, data)
    assert [(n, r, raw) for n, r, raw in rows] == [
        (
            1,
            {
                "transaction_id": "tx-1",
                "external_subscription_id": "sub",
                "code": "mistral_tokens",
                "timestamp": "1764000000",
                "properties": {"tokens": "1000", "model": "mistral-small"},
            },
            "tx-1,sub,mistral_tokens,1764000000,1000,mistral-small",
        ),
        (
            2,
            {
                "transaction_id": "tx-2",
                "external_subscription_id": "sub",
                "code": "mistral_tokens",
                "timestamp": "2025-11-24T16:00:00Z",
                "properties": {"model": "mistral-large"},  # an empty cell is no property
            },
            "tx-2,sub,mistral_tokens,2025-11-24T16:00:00Z,,mistral-large",
        ),
    ]
    assert valid(rows[0][1])[3:5] == (BASE, '{"tokens":"1000","model":"mistral-small"}')


def test_csv_json_properties_column() -> None:
    data = (
        HEADER + b",properties,properties.region\n"
        b'tx-1,sub,c,1764000000,"{""tokens"": 0.1, ""region"": ""us""}",eu\n'
        b"tx-2,sub,c,1764000000,,\n"
        b'tx-3,sub,c,1764000000,"{not json",\n'
        b'tx-4,sub,c,1764000000,"[1, 2]",\n'
        b"tx-5,sub,c,1764000000,null,\n"
    )
    rows = read(read_csv, data)
    # properties.<key> columns win over the same key in the JSON column
    assert rows[0][1]["properties"] == {"tokens": Decimal("0.1"), "region": "eu"}
    assert valid(rows[0][1])[4] == '{"tokens":0.1,"region":"eu"}'
    assert rows[1][1]["properties"] == {}
    assert reason(rows[2][1]) == ("invalid_json", "properties")
    assert reason(validate_record(rows[3][1], BOUNDS)) == ("wrong_type", "properties")
    assert valid(rows[4][1])[4] == "{}"


def test_csv_ragged_rows_are_column_count_rejections_at_their_row() -> None:
    data = (
        HEADER + b"\n"
        b"tx-1,sub,c,1764000000\n"
        b"tx-2,sub,c\n"
        b"\n"  # a blank line: no row, but it still counts as a record number
        b"tx-4,sub,c,1764000000,surplus\n"
        b"tx-5,sub,c,1764000000\n"
    )
    rows = read(read_csv, data)
    assert [(n, reason(r) if isinstance(r, Rejection) else "ok", raw) for n, r, raw in rows] == [
        (1, "ok", "tx-1,sub,c,1764000000"),
        (2, ("column_count", None), "tx-2,sub,c"),
        (4, ("column_count", None), "tx-4,sub,c,1764000000,surplus"),
        (5, "ok", "tx-5,sub,c,1764000000"),
    ]


def test_csv_quoted_newlines_stay_in_the_value_and_rows_are_records() -> None:
    data = (
        HEADER + b",properties.note\r\n"
        b'tx-1,sub,c,1764000000,"two\nlines"\r\n'
        b'tx-2,sub,c,1764000000,"say ""hi"",\r\nthen"\r\n'
        b"tx-3,sub,c\r\n"
    )
    rows = read(read_csv, data)
    assert [n for n, _, _ in rows] == [1, 2, 3]  # data records, not physical lines
    assert rows[0][1]["properties"] == {"note": "two\nlines"}
    assert rows[1][1]["properties"] == {"note": 'say "hi",\r\nthen'}
    assert rows[1][2] == 'tx-2,sub,c,1764000000,"say ""hi"",\r\nthen"'
    assert reason(rows[2][1]) == ("column_count", None)


def test_csv_header_names_are_stripped_and_extra_columns_ignored() -> None:
    data = b" transaction_id , external_subscription_id,code ,region\ntx-1,sub,c,eu\n"
    ((_, record, _),) = read(read_csv, data)
    assert valid(record)[:3] == ("tx-1", "sub", "c")


def test_csv_empty_cell_is_a_missing_field() -> None:
    ((_, record, _),) = read(read_csv, HEADER + b"\n,sub,c,\n")
    assert reason(validate_record(record, BOUNDS)) == ("missing_field", "transaction_id")
    ((_, record, _),) = read(read_csv, HEADER + b"\ntx,sub,c,\n")
    assert valid(record)[3] == BOUNDS.written_at  # an empty timestamp is no timestamp


@pytest.mark.parametrize(
    "header",
    [
        b"external_subscription_id,code",
        b"transaction_id,code",
        b"transaction_id,external_subscription_id",
        b"id,subscription,metric",
        b"TRANSACTION_ID,external_subscription_id,code",
    ],
    ids=["no-transaction_id", "no-subscription", "no-code", "none", "upper-case"],
)
def test_csv_missing_required_column_is_unreadable(header: bytes) -> None:
    with pytest.raises(ObjectUnreadable, match="the CSV header has no column"):
        read(read_csv, header + b"\na,b,c\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEADER + b"\ntx-1,sub,c,1\ntx-2,caf\xe9,c,1\n", "not UTF-8"),
        (b"\xff\xfe" + HEADER.decode().encode("utf-16-le"), "not UTF-8"),
        (HEADER + b'\ntx-1,sub,c,1\ntx-2,sub,"c,1\ntx-3,sub,c,1\n', "line 4: unexpected end"),
        # strict CSV: text after a closing quote is malformed, not silently glued on
        (HEADER + b'\ntx-1,"sub"x,c,1\n', "line 2: ',' expected after '\"'"),
    ],
    ids=["latin1", "utf16", "unclosed-quote", "text-after-closing-quote"],
)
def test_csv_unreadable_objects(data: bytes, message: str) -> None:
    with pytest.raises(ObjectUnreadable, match=message):
        read(read_csv, data)


def test_csv_byte_order_mark_is_ignored() -> None:
    ((_, record, _),) = read(read_csv, b"\xef\xbb\xbf" + HEADER + b"\ntx-1,sub,c,1764000000\n")
    assert valid(record)[:4] == ("tx-1", "sub", "c", BASE)


def test_csv_empty_and_header_only_objects_have_no_rows() -> None:
    assert read(read_csv, b"") == []
    assert read(read_csv, HEADER + b"\n") == []


def test_csv_nul_reaches_validation() -> None:
    ((_, record, _),) = read(read_csv, HEADER + b"\ntx\x00,sub,c,1764000000\n")
    assert reason(validate_record(record, BOUNDS)) == ("nul_character", "transaction_id")


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def parquet(columns: dict[str, Any], row_group_size: int | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


def ids(n: int) -> dict[str, Any]:
    return {
        "transaction_id": [f"tx-{i}" for i in range(1, n + 1)],
        "external_subscription_id": [SUB] * n,
        "code": ["mistral_tokens"] * n,
    }


def test_parquet_string_columns_and_utc_timestamps() -> None:
    import pyarrow as pa

    data = parquet(
        {
            **ids(2),
            "timestamp": pa.array(
                [BASE, BASE + timedelta(seconds=1)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    rows = read(read_parquet, data)
    assert [(n, raw) for n, _, raw in rows] == [(1, None), (2, None)]
    assert [valid(r)[:4] for _, r, _ in rows] == [
        ("tx-1", SUB, "mistral_tokens", BASE),
        ("tx-2", SUB, "mistral_tokens", BASE + timedelta(seconds=1)),
    ]


def test_parquet_timestamp_in_another_zone_is_converted_and_epoch_ints_work() -> None:
    import pyarrow as pa

    paris = parquet(
        {**ids(1), "timestamp": pa.array([BASE], pa.timestamp("ms", tz="Europe/Paris"))}
    )
    ((_, record, _),) = read(read_parquet, paris)
    assert valid(record)[3] == BASE
    epoch = parquet({**ids(1), "timestamp": pa.array([BASE_TS], pa.int64())})
    ((_, record, _),) = read(read_parquet, epoch)
    assert valid(record)[3] == BASE


def test_parquet_naive_timestamp_is_rejected_at_validation() -> None:
    import pyarrow as pa

    data = parquet(
        {**ids(2), "timestamp": pa.array([datetime(2025, 11, 24, 16), None], pa.timestamp("us"))}
    )
    rows = read(read_parquet, data)
    assert reason(validate_record(rows[0][1], BOUNDS)) == ("timestamp_without_zone", "timestamp")
    assert valid(rows[1][1])[3] == BOUNDS.written_at  # null: no timestamp given


def test_parquet_struct_properties() -> None:
    import pyarrow as pa

    data = parquet(
        {
            **ids(2),
            "properties": pa.array(
                [{"tokens": 5, "model": "mistral-small"}, {"tokens": None, "model": "m"}]
            ),
        }
    )
    rows = read(read_parquet, data)
    assert valid(rows[0][1])[4] == '{"tokens":5,"model":"mistral-small"}'
    assert valid(rows[1][1])[4] == '{"tokens":null,"model":"m"}'


def test_parquet_map_properties_and_property_columns() -> None:
    import pyarrow as pa

    data = parquet(
        {
            **ids(3),
            "properties": pa.array(
                [[("tokens", "5"), ("model", "small")], [], None],
                pa.map_(pa.string(), pa.string()),
            ),
            "properties.region": ["eu", None, "us"],
        }
    )
    rows = read(read_parquet, data)
    assert [valid(r)[4] for _, r, _ in rows] == [
        '{"tokens":"5","model":"small","region":"eu"}',
        "{}",
        '{"region":"us"}',
    ]


def test_parquet_decimal_properties_stay_exact() -> None:
    import pyarrow as pa

    data = parquet(
        {**ids(1), "properties.tokens": pa.array([Decimal("0.10")], pa.decimal128(10, 2))}
    )
    ((_, record, _),) = read(read_parquet, data)
    assert valid(record)[4] == '{"tokens":0.10}'


def test_parquet_json_string_properties_column() -> None:
    data = parquet({**ids(2), "properties": ['{"tokens": 0.1}', "{broken"]})
    rows = read(read_parquet, data)
    assert valid(rows[0][1])[4] == '{"tokens":0.1}'
    assert reason(rows[1][1]) == ("invalid_json", "properties")


def test_parquet_wrong_column_types_are_rejected_at_validation() -> None:
    import pyarrow as pa

    data = parquet({**ids(1), "transaction_id": pa.array([7], pa.int64())})
    ((_, record, _),) = read(read_parquet, data)
    assert reason(validate_record(record, BOUNDS)) == ("wrong_type", "transaction_id")


def test_parquet_missing_column_is_unreadable() -> None:
    columns = ids(1)
    del columns["code"]
    with pytest.raises(ObjectUnreadable, match="the Parquet schema has no column code"):
        read(read_parquet, parquet(columns))


@pytest.mark.parametrize(
    "data",
    [b"", b"not parquet at all", b"PAR1" + b"\x00" * 20 + b"PAR1", line(ev(1))],
    ids=["empty", "text", "magic-only", "jsonl"],
)
def test_not_parquet_is_unreadable(data: bytes) -> None:
    with pytest.raises(ObjectUnreadable, match="not a Parquet file"):
        read(read_parquet, data)


def test_truncated_parquet_is_unreadable() -> None:
    data = parquet(ids(20))
    with pytest.raises(ObjectUnreadable):
        read(read_parquet, data[: len(data) - 10])


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------


def test_chunk_sizes_are_respected() -> None:
    jsonl = b"".join(line(ev(i)) for i in range(10))
    assert chunk_sizes(read_jsonl, jsonl, 3) == [3, 3, 3, 1]
    assert chunk_sizes(read_jsonl, jsonl, 10) == [10]
    assert chunk_sizes(read_jsonl, jsonl, 1) == [1] * 10
    with_bad_rows = jsonl + b"oops\n\n" + line(ev(11))  # a rejection counts, a blank does not
    assert chunk_sizes(read_jsonl, with_bad_rows, 4) == [4, 4, 4]
    assert chunk_sizes(read_json, orjson.dumps([ev(i) for i in range(7)]), 3) == [3, 3, 1]
    csv = HEADER + b"\n" + b"".join(b"tx-%d,sub,c,1\n" % i for i in range(5))
    assert chunk_sizes(read_csv, csv, 2) == [2, 2, 1]


def test_parquet_chunks_are_bounded_and_rows_numbered_across_row_groups() -> None:
    data = parquet(ids(25), row_group_size=7)
    chunks = list(read_parquet(io.BytesIO(data), 4))
    assert all(0 < len(chunk) <= 4 for chunk in chunks)
    numbers = [n for chunk in chunks for n, _, _ in chunk]
    assert numbers == list(range(1, 26))
    assert [r["transaction_id"] for chunk in chunks for _, r, _ in chunk] == [
        f"tx-{i}" for i in range(1, 26)
    ]


def test_loads_exact_parses_plain_documents_with_orjson_types() -> None:
    assert loads_exact(b'{"a": 1, "b": [true, null, "x"]}') == {"a": 1, "b": [True, None, "x"]}
    assert loads_exact('{"a": 1.5}') == {"a": Decimal("1.5")}


def test_parquet_doubles_become_exact_decimals_by_their_shortest_text() -> None:
    """The documented rule: a double is read through its shortest round-trip text (repr), so
    no binary float reaches a property, an amount or a timestamp."""
    import pyarrow as pa

    data = parquet(
        {
            **ids(5),
            "timestamp": pa.array([BASE_TS + 0.25] * 5, pa.float64()),
            "properties.tokens": pa.array([0.1, 1e-05, 2.675, 1234.0, float("nan")],
                                          pa.float64()),
            "precise_total_amount_cents": pa.array([0.1, 1e-05, 12.5, None, None], pa.float64()),
            "properties.cost": pa.array([1.1, 2.2, 3.3, float("inf"), 0.5], pa.float32()),
        }
    )
    rows = read(read_parquet, data)
    events = [r if isinstance(r, Rejection) else validate_record(r, BOUNDS) for _, r, _ in rows]
    # A float32 column holds no 1.1: it is widened to the double it is and read by the rule
    # (write Parquet DECIMAL or text columns to keep decimals exact).
    assert [e[4] for e in events[:3]] == [
        '{"tokens":0.1,"cost":1.100000023841858}',
        '{"tokens":0.00001,"cost":2.200000047683716}',
        '{"tokens":2.675,"cost":3.299999952316284}',
    ]
    assert [e[5] for e in events[:3]] == [Decimal("0.1"), Decimal("0.00001"), Decimal("12.5")]
    assert events[0][3] == BASE + timedelta(seconds=0.25)
    # NaN and infinity are not quantities: the row is rejected, not billed as null or 0; an
    # infinity is beyond the number rule's bound, and said so
    assert reason(events[3]) == ("number_out_of_range", "properties.cost")
    assert reason(events[4]) == ("invalid_number", "properties")
    assert "nan" in events[4].message


PARQUET_NUMBERS = [
    # (arrow type, value, the stored tokens or the field refused)
    ("int64-max", "int64", 2**63 - 1, "9223372036854775807"),
    ("uint64-max", "uint64", 2**64 - 1, "18446744073709551615"),
    ("float-1e24", "float64", 1e24, "1e+24"),
    ("float-1e308", "float64", 1e308, "properties.tokens"),
    ("float-minus-1e308", "float64", -1e308, "properties.tokens"),
    ("float-inf", "float64", float("inf"), "properties.tokens"),
    ("float-tiny", "float64", 1e-30, "properties.tokens"),
    ("float-negative-zero", "float64", -0.0, "-0.0"),
    # a decimal column's scale is its type: 1.5 in decimal(38, 30) is 1.5
    ("decimal-scale-30", ("decimal128", 38, 30), Decimal("1.5"), "1.5"),
    ("decimal-scale-30-digits", ("decimal128", 38, 30), Decimal("1." + "0" * 28 + "1"),
     "properties.tokens"),
    ("decimal-edge-minus-1", ("decimal128", 38, 0), Decimal(10**25 - 1), str(10**25 - 1)),
    ("decimal-edge", ("decimal128", 38, 0), Decimal(10**25), "properties.tokens"),
    ("decimal256-huge", ("decimal256", 76, 0), Decimal(10**75), "properties.tokens"),
    ("decimal-big-integral", ("decimal256", 76, 30), Decimal(10**24), "1E+24"),
]


@pytest.mark.parametrize("kind, value, expected", [c[1:] for c in PARQUET_NUMBERS],
                         ids=[c[0] for c in PARQUET_NUMBERS])
def test_parquet_numbers_follow_the_number_rule(kind: Any, value: Any, expected: str) -> None:
    """Typed columns meet the same bound as JSON text (models/number_rule.py): refused as
    ``number_out_of_range`` naming the property, or stored exactly; never a failed object."""
    import pyarrow as pa

    arrow = (getattr(pa, kind[0])(kind[1], kind[2]) if isinstance(kind, tuple)
             else getattr(pa, kind)())
    data = parquet({**ids(2), "timestamp": [BASE_TS] * 2,
                    "properties.tokens": pa.array([value, None], arrow)})
    rows = read(read_parquet, data)
    results = [r if isinstance(r, Rejection) else validate_record(r, BOUNDS) for _, r, _ in rows]
    assert not isinstance(results[1], Rejection)  # its neighbour is kept
    if expected.startswith("properties."):
        assert reason(results[0]) == ("number_out_of_range", expected)
    else:
        assert not isinstance(results[0], Rejection), results[0]
        stored = loads_exact(results[0][4])["tokens"]
        assert Decimal(str(stored)) == Decimal(expected)  # exactly: no double in between


def test_json_and_csv_json_columns_carry_numbers_beyond_a_double_to_the_rule() -> None:
    """A .json batch and a CSV ``properties`` JSON column read 1e400 exactly, so the number
    rule refuses that row by name and keeps its neighbours."""
    good = b'{"transaction_id": "a", "external_subscription_id": "s", "code": "c",' \
           b' "timestamp": 1764000000, "properties": {"tokens": 5}}'
    bad = good.replace(b'"a"', b'"b"').replace(b"5}", b"1e400}")
    rows = read(read_json, b'{"events": [' + good + b", " + bad + b"]}")
    results = [validate_record(r, BOUNDS) for _, r, _ in rows]
    assert not isinstance(results[0], Rejection)
    assert reason(results[1]) == ("number_out_of_range", "properties.tokens")
    csv = (b"transaction_id,external_subscription_id,code,timestamp,properties\n"
           b'a,s,c,1764000000,"{""tokens"": 5}"\n'
           b'b,s,c,1764000000,"{""tokens"": -1e400}"\n'
           b'c,s,c,1764000000,"{""tokens"": ""1e400""}"\n')
    results = [validate_record(r, BOUNDS) for _, r, _ in read(read_csv, csv)]
    assert not isinstance(results[0], Rejection) and not isinstance(results[2], Rejection)
    assert reason(results[1]) == ("number_out_of_range", "properties.tokens")
