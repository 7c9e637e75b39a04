"""The column path (pyarrow) stages exactly what the row path stages, and rejects nothing itself.

Every case runs both: ``validated(read_jsonl(...))`` (the row path, the definition) and
``staged_jsonl`` (the column path with its hand-offs), and the staged events and the rejected
rows must be the same. Staged rows are compared as values (the timestamp as an instant, the
properties as JSON): the two paths spell a timestamp differently and PostgreSQL stores both as
the same ``timestamptz``/``jsonb``.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tallyflow.models.events import MAX_ID_LENGTH, TimeBounds
from tallyflow.tasks.ingest import SourceSpec, build_source, validated
from tallyflow.tasks.ingest.columnar import _columns, applies, staged_jsonl
from tallyflow.tasks.ingest.readers import READERS, ObjectUnreadable, jsonl_lines, read_jsonl

BOUNDS = TimeBounds(written_at=datetime(2025, 11, 25, tzinfo=UTC),
                    archived_before=datetime(2025, 1, 1, tzinfo=UTC))
LAGO = build_source(SourceSpec(url="file:///nowhere"))


def _event(n: int, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "transaction_id": f"tx-{n}", "external_subscription_id": f"sub_{n % 7}",
        "code": "mistral_tokens", "timestamp": 1_764_000_000 + n,
        "properties": {"tokens": n * 13, "model": "mistral-small", "type": "input"},
    }
    event.update(changes)
    return event


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _both(data: bytes, chunk_rows: int) -> tuple[Any, Any]:
    row = list(validated(read_jsonl(io.BytesIO(data), chunk_rows), LAGO, BOUNDS))
    column = list(staged_jsonl(io.BytesIO(data), chunk_rows, LAGO, BOUNDS, 1))
    return _normal(row), _normal(column)


def _normal(chunks: list[Any]) -> tuple[list[tuple[Any, ...]], list[Any], list[int]]:
    staged = []
    for chunk, _ in chunks:
        lines = chunk.data.decode().split("\n")
        assert lines.pop() == "" and len(lines) == chunk.rows
        for line in lines:
            row, sub, txn, subscription, code, ts, props, precise, ts_given = (
                _unescape(field) for field in line.split("\t"))
            staged.append((int(row), int(sub), txn, subscription, code,
                           datetime.fromisoformat(ts), orjson.loads(props), precise, ts_given))
    rejected = [reject for _, rejects in chunks for reject in rejects]
    return sorted(staged), rejected, [chunk.rows + len(rejects) for chunk, rejects in chunks]


def _unescape(field: str) -> str:
    """COPY text format back to the value (``\\N`` stays: it is the NULL marker)."""
    return re.sub(r"\\([tnr\\])",
                  lambda m: {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[m[1]], field)


def _same(data: bytes, chunk_rows: int = 4) -> None:
    row, column = _both(data, chunk_rows)
    assert column == row


def test_plain_lago_jsonl_takes_the_column_path() -> None:
    assert applies(LAGO, READERS["jsonl"])
    assert not applies(LAGO, READERS["csv"])
    mapped = build_source(SourceSpec(url="file:///nowhere", mapping="cloudevents"))
    assert not applies(mapped, READERS["jsonl"])


def test_a_clean_chunk_is_staged_whole_by_column() -> None:
    data = b"".join(_line(_event(n)) for n in range(50))
    lines = next(jsonl_lines(io.BytesIO(data), 100))
    taken = _columns(lines, BOUNDS)
    assert taken is not None
    assert taken[1] == 50 and taken[2] == []
    _same(data, 100)


def test_only_the_unusual_rows_of_a_chunk_go_row_by_row() -> None:
    data = b"".join(_line(_event(n)) for n in range(6)) + b"".join([
        _line(_event(6, timestamp=None)),                      # default timestamp
        _line(_event(7, transaction_id="tab\there")),          # COPY escape
        _line(_event(8, properties={"tokens": 1})),            # keys missing: null children
        _line(_event(9, precise_total_amount_cents=12)),       # an amount
        _line(_event(10, code="")),                            # rejected
        _line(_event(11, timestamp=1)),                        # out of range
    ])
    lines = next(jsonl_lines(io.BytesIO(data), 100))
    taken = _columns(lines, BOUNDS)
    assert taken is not None
    assert taken[1] == 6
    assert [row for row, _ in taken[2]] == [7, 8, 9, 10, 11, 12]
    _same(data, 100)


@pytest.mark.parametrize("lines", [
    [b"null"],                                                 # crashes pyarrow's reader
    [_line(_event(1)).strip() + b" null"],                     # two values on one line
    [_line(_event(1)).strip() + b" " + _line(_event(2))],
    [b'{"transaction_id":"t","external_subscription_id":"s","code":"c","timestamp":1764000000,'
     b'"properties":', b'{"a":1}}', _line(_event(3)).strip() + b" " + _line(_event(4)).strip()],
    [b'{"transaction_id":"a","transaction_id":"b","external_subscription_id":"s","code":"c",'
     b'"timestamp":1764000000,"properties":{}}'],              # duplicate key: last wins
    [_line(_event(1)).replace(b'"input"', b'"in\\u0000put"')],
    [_line(_event(1)).replace(b'"input"', b'"in\\"put"')],
    [_line(_event(1)).replace(b'"input"', b'"in\\\\put"')],
    [_line(_event(1)).replace(b'"input"', b'"\\ud800"')],       # lone surrogate
    [_line(_event(1)).replace(b'"input"', b'"\xff"')],          # not UTF-8: object unreadable
    [_line(_event(1)).replace(b"13", b"NaN")],
    [_line(_event(1)).replace(b"13", b"1.5")],
    [_line(_event(1)).replace(b"13", b"18446744073709551616")],
    # the number rule (models/number_rule.py): refused alike, whichever path reads the chunk
    *([_line(_event(1)).replace(b"13", literal)] for literal in (
        b"1e400", b"-1e400", b"1e308", b"-1e308", b"123456789012345678901234567890",
        b"9999999999999999999999999", b"10000000000000000000000000", b"-0", b"-0.0",
        b"0." + b"0" * 39 + b"1", b"0." + b"0" * 25 + b"1", b"1E+24", b"1e25", b"1e-27")),
    [_line(_event(1, properties={"tokens": "1" * 40, "hex": "0x1F", "s": "1e400"}))],
    [_line(_event(1)).replace(b'"input"', b'{"deep":[1,1e400]}')],
    [_line(_event(1, precise_total_amount_cents="1" * 30))],
    [_line(_event(1)).replace(b'}}', b'},"precise_total_amount_cents":1e400}')],
    [_line(_event(1, properties={"when": "2025-01-01"}))],      # pyarrow would read a date
    [_line(_event(1, properties={"nested": {"a": 1}}))],
    [_line(_event(1, properties={"list": [1, 2]}))],
    [_line(_event(1, properties={"nothing": None}))],
    [_line(_event(1, properties={}))],
    [_line(_event(1, properties={"flag": True, "n": -5, "é": "ü\u2028"}))],
    [_line(_event(1, properties={'we"ird': 1}))],
    [_line(_event(1, properties={"a\tb": 1}))],
    [_line(_event(1, properties=None))],
    [_line(_event(1, properties=[1]))],
    [_line(_event(1, extra="ignored"))],
    [_line(_event(1, timestamp="2025-11-24T00:00:00Z"))],
    [_line(_event(1, timestamp=True))],
    [_line(_event(1, timestamp=1.0))],
    [_line(_event(1, timestamp=10**20))],
    [_line(_event(1, transaction_id=5))],
    [_line(_event(1, transaction_id="x" * MAX_ID_LENGTH))],
    [_line(_event(1, transaction_id="x" * (MAX_ID_LENGTH + 1)))],
    [_line(_event(1, transaction_id="   "))],
    [_line(_event(1, transaction_id="\u00a0"))],
    [_line(_event(1, transaction_id="é" * MAX_ID_LENGTH))],
    [_line(_event(1, external_subscription_id="a\\b"))],
    [_line(_event(1, precise_total_amount_cents="0.1"))],
    [_line(_event(1, precise_total_amount_cents=None))],
    [b"\xef\xbb\xbf" + _line(_event(1))],                      # byte order mark
    [_line(_event(1)).replace(b"\n", b"\r\n")],
    [_line(_event(1)).replace(b"\n", b"\r") + _line(_event(2))],
    [_line(_event(1)), b"\n", b"   \n", _line(_event(2))],       # blank lines keep numbers
    [b"  " + _line(_event(1))],
    [_line(_event(1)).replace(b"}\n", b"}  \n")],
    [_line(_event(1)), b"[1]\n", b"5\n", b'"x"\n', b"not json\n"],
    [_line(_event(1)).strip()],                                 # no newline at the end
])
def test_unusual_lines_stage_and_reject_as_the_row_path_does(lines: list[bytes]) -> None:
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines[:-1])
    data += lines[-1]
    for good in range(3):  # alone, and among plain rows (chunks of 4 split them differently)
        padded = b"".join(_line(_event(100 + n)) for n in range(good)) + data
        try:
            row = _normal(list(validated(read_jsonl(io.BytesIO(padded), 4), LAGO, BOUNDS)))
        except ObjectUnreadable as exc:  # the column path must fail the object the same way
            with pytest.raises(ObjectUnreadable) as raised:
                list(staged_jsonl(io.BytesIO(padded), 4, LAGO, BOUNDS, 1))
            assert str(raised.value) == str(exc)
            continue
        assert _normal(list(staged_jsonl(io.BytesIO(padded), 4, LAGO, BOUNDS, 1))) == row


_TEXTS = st.one_of(
    st.sampled_from(["a", "tx-1", "sub_1", " x ", "", "  ", "é", "a\tb", "a\\b", 'q"', "\x00",
                     "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "2025-01-01"]),
    st.text(max_size=8),
)
_VALUES = st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.none(), _TEXTS,
                    st.integers(-(10**30), 10**30), st.sampled_from([10**25, -(10**25)]),
                    st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
_EVENTS = st.fixed_dictionaries(
    {"transaction_id": st.one_of(_TEXTS, st.integers()),
     "external_subscription_id": _TEXTS, "code": _TEXTS},
    optional={
        "timestamp": st.one_of(
            st.integers(1_700_000_000, 1_770_000_000), st.integers(-5, 2**40), st.none(),
            st.just("2025-11-24T10:00:00+01:00"), st.floats(1.7e9, 1.8e9)),
        "properties": st.one_of(
            st.dictionaries(st.sampled_from(["tokens", "model", "type", "é", 'a"b']), _VALUES,
                            max_size=3),
            st.none(), st.just([])),
        "precise_total_amount_cents": st.one_of(st.none(), st.integers(0, 10), st.just("1.5"),
                                                st.integers(10**24, 10**26)),
        "other": st.integers(),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_EVENTS, st.just(None)), min_size=1, max_size=12),
       st.integers(1, 6), st.booleans())
def test_any_mix_stages_and_rejects_as_the_row_path_does(
    events: list[Any], chunk_rows: int, plain: bool
) -> None:
    lines = [(b"\n" if event is None else _line(event)) for event in events]
    if plain:  # mostly plain rows, so chunks also go by column with hand-offs
        lines = [_line(_event(n)) for n in range(chunk_rows)] + lines
    data = b"".join(lines)
    _same(data, chunk_rows)


def test_the_column_path_keeps_row_numbers_after_blank_lines() -> None:
    data = _line(_event(1)) + b"\n\n" + b"".join(_line(_event(n)) for n in range(2, 12))
    row, column = _both(data, 4)
    assert column == row
    assert [staged[0] for staged in column[0]] == [1, *range(4, 14)]


def test_a_small_chunk_goes_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small object never imports pyarrow: the row path costs less than the import."""
    import tallyflow.tasks.ingest.columnar as columnar

    taken: list[int] = []
    monkeypatch.setattr(columnar, "_columns", lambda lines, bounds: taken.append(len(lines)))
    data = b"".join(_line(_event(n)) for n in range(columnar.COLUMN_MIN_ROWS + 1))
    staged = list(staged_jsonl(io.BytesIO(data), columnar.COLUMN_MIN_ROWS, LAGO, BOUNDS))
    assert taken == [columnar.COLUMN_MIN_ROWS]  # the full chunk; the last row went row by row
    assert [chunk.rows for chunk, _ in staged] == [columnar.COLUMN_MIN_ROWS, 1]


def test_an_error_of_pyarrow_leaves_the_chunk_to_the_row_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow as pa

    import tallyflow.tasks.ingest.columnar as columnar

    def trip(*args: Any) -> None:
        raise pa.ArrowCapacityError("tripped")

    monkeypatch.setattr(columnar, "_take", trip)
    data = b"".join(_line(_event(n)) for n in range(10)) + b"not json\n"
    lines = next(jsonl_lines(io.BytesIO(data), 100))
    assert columnar._columns(lines, BOUNDS) is None
    _same(data, 100)


def test_timestamps_are_the_same_instant() -> None:
    data = _line(_event(1, timestamp=int((BOUNDS.written_at - timedelta(days=30)).timestamp())))
    row, column = _both(data, 4)
    assert column == row
    assert column[0][0][5] == BOUNDS.written_at - timedelta(days=30)
