"""Hostile and malformed batch objects through the real ingestion, against a real PostgreSQL.

Every file in ``tests/fixtures/hostile`` (made by ``make_fixtures.py`` there, which shows each
one's exact bytes) is loaded with ``ingest_object`` and must end in exactly one of two ways:

* ``Loads``: the object is ingested; the listed rows are rejected with the stated reason (row
  numbers as the reader counts them: JSON Lines line numbers, CSV data records, JSON array
  positions) and every good row next to them is stored;
* ``Fails``: the object is recorded failed with the stated error and NOTHING of it is stored,
  no events and no rejected rows. Objects are read one row per chunk here, so where the damage
  comes late (non_utf8.*, truncated.jsonl.gz, csv_unclosed_quote.csv,
  parquet_corrupt_row_group.parquet) earlier chunks were already loaded and must roll back.

Never a crash of the run, never a partial object. Objects are written at a pinned time
(WRITTEN_AT), so the accepted timestamp range is 1970-01-01 .. WRITTEN_AT + 1 day exactly.

Decided here: a UTF-8 byte order mark at the start of a JSON Lines, JSON or CSV object is
accepted and ignored (RFC 8259 allows it; Excel writes it), see ``bom.*``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.models.events import MAX_RAW_KEPT
from tallyflow.tasks.ingest import (
    ObjectResult,
    SourceSpec,
    build_source,
    ingest_object,
    register_objects,
)
from tests.storage import Bucket

HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "hostile"
WRITTEN_AT = datetime(2025, 11, 25, tzinfo=UTC)
SUB = "sub_acme_001"


@dataclass(frozen=True)
class Loads:
    """Ingested: these transaction ids stored (row order), these rows rejected."""

    accepted: tuple[str, ...]
    rejected: tuple[tuple[int, str | None, str], ...] = ()  # conflicts included
    duplicates: int = 0
    conflicts: int = 0  # same key as a stored event, other content (rejected rows too)


@dataclass(frozen=True)
class Fails:
    """Recorded failed with an error containing this text; nothing stored."""

    error: str


def tx(*numbers: int) -> tuple[str, ...]:
    return tuple(f"tx-{n}" for n in numbers)


def rows(field: str | None, reason: str, *numbers: int) -> tuple[tuple[int, str | None, str], ...]:
    return tuple((n, field, reason) for n in numbers)


TS = "timestamp"
PROPS = "properties"

CASES: dict[str, Loads | Fails] = {
    # --- broken or non-object JSON: one rejected row each, neighbours load -------------------
    "broken_json.jsonl": Loads(tx(1, 3, 6), rows(None, "invalid_json", 2, 4, 5, 7, 8, 9)),
    "not_objects.jsonl": Loads(
        tx(6), ((1, "transaction_id", "missing_field"), *rows(None, "not_an_object", 2, 3, 4, 5, 7))
    ),
    "lone_surrogate.jsonl": Loads(tx(1, 4), rows(None, "invalid_json", 2, 3)),
    "deep_nesting.jsonl": Loads(
        tx(4), ((1, PROPS, "wrong_type"), *rows(None, "invalid_json", 2, 3))
    ),
    "nan_infinity.jsonl": Loads(
        tx(6, 7),
        (
            *rows(None, "invalid_json", 1, 2, 3),
            (4, TS, "invalid_timestamp"),
            (5, "precise_total_amount_cents", "invalid_number"),
        ),
    ),
    # --- fields: missing, wrong type, empty, too long, NUL -----------------------------------
    "missing_required.jsonl": Loads(
        tx(5),
        (
            (1, "transaction_id", "missing_field"),
            (2, "external_subscription_id", "missing_field"),
            (3, "code", "missing_field"),
            (4, "transaction_id", "missing_field"),  # "transaction_id": null
        ),
    ),
    "missing_optional.jsonl": Loads(tx(1, 2, 3, 4)),
    "wrong_types.jsonl": Loads(
        tx(10),
        (
            (1, "transaction_id", "wrong_type"),  # a number
            (2, "code", "wrong_type"),  # an object
            (3, "external_subscription_id", "wrong_type"),  # a list
            (4, TS, "wrong_type"),  # true
            (5, TS, "wrong_type"),  # an object
            (6, PROPS, "wrong_type"),  # a list
            (7, PROPS, "wrong_type"),  # a string
            (8, "precise_total_amount_cents", "invalid_number"),  # an object
            (9, "transaction_id", "wrong_type"),  # true
            (11, TS, "wrong_type"),  # a list
            (12, "precise_total_amount_cents", "invalid_number"),  # true
        ),
    ),
    "empty_strings.jsonl": Loads(
        tx(6, 7),
        (
            (1, "transaction_id", "empty_value"),
            (2, "external_subscription_id", "empty_value"),  # spaces only
            (3, "code", "empty_value"),  # a tab
            (4, TS, "invalid_timestamp"),
            (5, "precise_total_amount_cents", "invalid_number"),
        ),
    ),
    "id_lengths.jsonl": Loads(
        ("a" * 255, "😀" * 255, "tx-7"),  # 255 characters (code points) is the limit
        (
            (2, "transaction_id", "too_long"),
            (4, "transaction_id", "too_long"),
            (5, "external_subscription_id", "too_long"),
            (6, "code", "too_long"),
        ),
    ),
    "nul_bytes.jsonl": Loads(
        tx(7),
        (
            (1, "transaction_id", "nul_character"),
            (2, "external_subscription_id", "nul_character"),
            (3, "code", "nul_character"),
            (4, PROPS, "nul_character"),  # in a key
            (5, PROPS, "nul_character"),  # in a value
            (6, PROPS, "nul_character"),  # nested
            (8, TS, "invalid_timestamp"),
        ),
    ),
    "unicode_ids.jsonl": Loads(
        (
            "tx-😀",
            "tx-👨‍👩‍👧‍👦",
            "עסקה-1",
            "معاملة-2",
            "e\u0301\u0301\u0301-combining",
            "交易-三",
            "zero\u200bwidth\ufeffbom",
            "line\u2028separator\u2029para",
            "\U0010fffd-private-use",
        )
    ),
    # --- timestamps -----------------------------------------------------------------------
    "timestamp_zones.jsonl": Loads(
        tx(4, 5, 6),
        (
            *rows(TS, "timestamp_without_zone", 1, 2, 3),  # "T", " " and date only
            *rows(TS, "invalid_timestamp", 7, 8, 9, 10),  # d/m/y, words, 30 Feb, +25:00
        ),
    ),
    "timestamp_far_future.jsonl": Loads(
        tx(5, 6), rows(TS, "timestamp_out_of_range", 1, 2, 3, 4, 7, 8)
    ),
    "timestamp_before_1970.jsonl": Loads(
        tx(5, 6), rows(TS, "timestamp_out_of_range", 1, 2, 3, 4, 7)
    ),
    "numeric_strings.jsonl": Loads(
        tx(2, 3, 4, 8, 9, 10, 13),  # tx-10: the JSON number 1e3 is exactly 1000
        (
            *rows(TS, "invalid_timestamp", 1, 5, 6),  # "1e5", "0x1A", "+1764000000"
            # strings must be plain decimals ("1e3", "1,000", "12.")
            *rows("precise_total_amount_cents", "invalid_number", 7, 11, 12),
        ),
    ),
    "huge_numbers.jsonl": Loads(
        tx(7, 8, 9),
        (
            (1, TS, "timestamp_out_of_range"),
            (2, TS, "timestamp_out_of_range"),
            # the number rule (models/number_rule.py): |x| < 1e25, at most 26 decimals; 1e400
            # is JSON all the same, refused for its size, not as broken JSON
            (3, "properties.tokens", "number_out_of_range"),
            (4, "properties.big", "number_out_of_range"),
            (5, "precise_total_amount_cents", "number_out_of_range"),
            (6, "properties.tokens", "number_out_of_range"),
            (10, "properties.tokens", "number_out_of_range"),
        ),
    ),
    # --- sizes ----------------------------------------------------------------------------
    "large_lines.jsonl.gz": Loads(
        tx(1, 4), ((2, None, "record_too_large"), (3, PROPS, "properties_too_large"))
    ),
    # --- dedup, SQL-looking and escape-heavy text, line endings, BOM --------------------------
    # tx-1 again with other tokens (row 2) and another timestamp (row 4): conflicts, kept out
    # and reported; tx-1 on sub_other is another event
    "duplicates.jsonl": Loads(
        tx(1, 2, 1), rows(None, "conflicting_duplicate", 2, 4), conflicts=2
    ),
    "sql_and_escapes.jsonl": Loads(tuple(f"tx-{i}-" for i in range(1, 16)) + ("'; drop",)),
    "crlf.jsonl": Loads(tx(1, 3, 5)),
    "blank_lines.jsonl": Loads(()),
    "bom.jsonl": Loads(tx(1, 2)),
    "bom.json": Loads(tx(1, 2)),
    "bom.csv": Loads(tx(1)),
    # --- JSON documents -------------------------------------------------------------------
    "json_array_mixed.json": Loads(tx(1, 7), rows(None, "not_an_object", 2, 3, 4, 5, 6)),
    "lago_batch_bad_event.json": Loads(
        tx(1, 4), ((2, TS, "invalid_timestamp"), (3, "code", "missing_field"))
    ),
    "json_neither.json": Fails('must be an array of events or {"events": [...]}'),
    "json_scalar.json": Fails('must be an array of events or {"events": [...]}'),
    "json_truncated.json": Fails("not valid JSON: unexpected end of data"),
    "json_nan.json": Fails("not valid JSON"),
    # --- CSV ------------------------------------------------------------------------------
    "csv_ragged.csv": Loads(tx(1, 4), rows(None, "column_count", 2, 3, 5, 6)),
    "csv_no_transaction_id.csv": Fails("the CSV header has no column transaction_id"),
    "csv_unclosed_quote.csv": Fails("unreadable CSV at line 4: unexpected end of data"),
    "csv_bad_properties.csv": Loads(
        tx(1, 4), ((2, PROPS, "invalid_json"), (3, PROPS, "wrong_type"))
    ),
    "csv_nul.csv": Loads(
        tx(3), ((1, "transaction_id", "nul_character"), (2, PROPS, "nul_character"))
    ),
    "csv_quoted_newlines.csv": Loads(tx(1, 2, 4), ((3, None, "column_count"),)),
    "csv_header_only.csv": Loads(()),
    "csv_extra_columns.csv": Loads(tx(1)),
    "non_utf8.csv": Fails("not UTF-8"),
    # --- bytes that are not text, empty and damaged objects -----------------------------------
    "non_utf8.jsonl": Fails("line 3 is not UTF-8"),
    "binary.jsonl": Fails("line 1 is not UTF-8"),
    "empty.jsonl": Loads(()),  # an empty batch is a batch of nothing, not an error
    "empty.csv": Loads(()),
    "empty.json": Fails("not valid JSON: Input is a zero-length, empty document"),
    "empty.parquet": Fails("not a Parquet file"),
    "truncated.jsonl.gz": Fails(
        "EOFError: Compressed file ended before the end-of-stream marker was reached"
    ),
    "garbage.jsonl.gz": Fails("BadGzipFile: Not a gzipped file"),
    "garbage.ndjson.zst": Fails("Unknown frame descriptor"),
    # --- Parquet --------------------------------------------------------------------------
    "parquet_wrong_schema.parquet": Fails("the Parquet schema has no column transaction_id"),
    "parquet_truncated.parquet": Fails("not a Parquet file: Parquet magic bytes not found"),
    "parquet_corrupt_row_group.parquet": Fails("Parquet read failed after row 30"),
    "parquet_wrong_types.parquet": Loads((), rows("transaction_id", "wrong_type", 1, 2)),
    "parquet_naive_timestamp.parquet": Loads(tx(2), rows(TS, "timestamp_without_zone", 1, 3)),
    # zstandard's stream reader ends a truncated frame quietly; the checked reader refuses it.
    "truncated.ndjson.zst": Fails("truncated zstd data"),
}

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_database(database_url: str) -> Engine:
    """The ``engine`` fixture's clean database, made once for the corpus table.

    Truncating every table before each of the ~60 cases costs more than the cases themselves;
    instead each case gets its own bucket folder (so its own source in the ledger), its
    assertions are scoped to its object, and ``corpus_engine`` empties ``events`` before it,
    since the fixtures reuse transaction ids.
    """
    from tallyflow.infra import db
    from tallyflow.models.tables import metadata

    eng = db.get_engine(database_url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))
    return eng


@pytest.fixture()
def corpus_engine(corpus_database: Engine) -> Engine:
    with corpus_database.begin() as conn:
        conn.execute(text("delete from events"))
    return corpus_database


def drop(folder: Path, fixture: str, name: str | None = None) -> Path:
    """Copy a fixture into the bucket folder, written at WRITTEN_AT."""
    target = folder / (name or fixture)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HOSTILE / fixture, target)
    stamp = WRITTEN_AT.timestamp()
    os.utime(target, (stamp, stamp))
    return target


def ingest_folder(engine: Engine, folder: Path, chunk_rows: int = 1) -> list[ObjectResult]:
    source = build_source(SourceSpec(url=folder.as_uri()))
    ids = register_objects(engine, source.key, source.list())
    return [ingest_object(engine, source, i, chunk_rows=chunk_rows) for i in ids]


def ingest_one(engine: Engine, tmp_path: Path, fixture: str) -> ObjectResult:
    folder = tmp_path / "bucket"
    drop(folder, fixture)
    (result,) = ingest_folder(engine, folder)
    return result


def query(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def events(engine: Engine, object_id: int | None = None) -> list[Any]:
    return query(
        engine,
        "select external_subscription_id, transaction_id, code, timestamp, properties,"
        " properties::text as properties_text, precise_total_amount_cents, row_number"
        " from events where object_id = coalesce(:id, object_id) order by object_id, row_number",
        id=object_id,
    )


def rejected(engine: Engine, object_id: int | None = None) -> list[Any]:
    return query(
        engine,
        "select row_number, field, reason, message, raw from rejected_rows"
        " where object_id = coalesce(:id, object_id) order by object_id, row_number",
        id=object_id,
    )


def fixture_lines(fixture: str) -> list[Any]:
    # split on "\n" only, as the reader does: the ids hold U+2028, which splitlines() splits on
    return [json.loads(line) for line in (HOSTILE / fixture).read_text().split("\n") if line]


def assert_outcome(engine: Engine, result: ObjectResult, expected: Loads | Fails) -> None:
    stored = events(engine, result.object_id)
    refused = rejected(engine, result.object_id)
    (ledger,) = query(
        engine,
        "select status, error, accepted, rejected, duplicates, conflicts, rows"
        " from ingest_objects"
        " where id = :id",
        id=result.object_id,
    )
    if isinstance(expected, Fails):
        assert result.status == "failed", result
        assert expected.error in (result.error or ""), result.error
        assert (ledger.status, ledger.error) == ("failed", result.error)
        assert (ledger.accepted, ledger.rejected, ledger.duplicates) == (0, 0, 0)
        assert stored == [], "a failed object must leave no events"
        assert refused == [], "a failed object must leave no rejected rows"
        return
    assert (result.status, result.error) == ("ingested", None)
    got = [row.transaction_id for row in stored]
    assert len(got) == len(expected.accepted)
    for txn, prefix in zip(got, expected.accepted, strict=True):
        assert txn.startswith(prefix), (txn, prefix)
    assert [(r.row_number, r.field, r.reason) for r in refused] == list(expected.rejected)
    assert all(r.message and r.raw is not None for r in refused)
    assert (result.accepted, result.rejected, result.duplicates, result.conflicts) == (
        len(expected.accepted),
        len(expected.rejected) - expected.conflicts,
        expected.duplicates,
        expected.conflicts,
    )
    assert result.rows == result.accepted + result.rejected + result.duplicates + (
        result.conflicts
    )
    # every record accounted for (docs/data-quality.md): Lago records give one event each
    assert result.records == result.records_emitted + result.rejected + result.records_empty
    assert result.events == result.accepted + result.duplicates + result.conflicts
    assert (result.records_emitted, result.records_empty) == (result.events, 0)
    assert (ledger.status, ledger.accepted, ledger.rejected, ledger.duplicates,
            ledger.conflicts) == (
        "ingested",
        result.accepted,
        result.rejected,
        result.duplicates,
        result.conflicts,
    )


# --------------------------------------------------------------------------------------------
# The corpus, one object at a time
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_hostile_object(corpus_engine: Engine, tmp_path: Path, fixture: str) -> None:
    result = ingest_one(corpus_engine, tmp_path, fixture)
    assert_outcome(corpus_engine, result, CASES[fixture])


def test_every_fixture_has_an_expected_outcome() -> None:
    files = {p.name for p in HOSTILE.iterdir() if p.suffix != ".py"}
    assert files == set(CASES) | {"odd_name.jsonl"}
    assert len(files) >= 30


# --------------------------------------------------------------------------------------------
# What was stored, exactly
# --------------------------------------------------------------------------------------------


def test_sql_looking_and_escape_heavy_text_is_stored_exactly(
    engine: Engine, tmp_path: Path
) -> None:
    """Quotes, backslashes (also the text ``\\u0000`` and ``\\.``), tabs, CR/LF, control
    characters and SQL in ids, codes, property keys and values round-trip byte for byte."""
    result = ingest_one(engine, tmp_path, "sql_and_escapes.jsonl")
    assert (result.status, result.accepted, result.rejected) == ("ingested", 16, 0)
    sent = fixture_lines("sql_and_escapes.jsonl")
    stored = events(engine)
    assert [(e.transaction_id, e.code, e.properties) for e in stored] == [
        (r["transaction_id"], r["code"], r["properties"]) for r in sent
    ]
    assert all(e.external_subscription_id == SUB for e in stored)
    (exists,) = query(engine, "select to_regclass('public.events') is not null as ok")
    assert exists.ok
    (count,) = query(engine, "select count(*) as n from events")
    assert count.n == 16


def test_unicode_and_long_ids_are_stored_exactly(engine: Engine, tmp_path: Path) -> None:
    ingest_one(engine, tmp_path, "unicode_ids.jsonl")
    sent = fixture_lines("unicode_ids.jsonl")
    assert [
        (e.transaction_id, e.external_subscription_id, e.properties) for e in events(engine)
    ] == [(r["transaction_id"], r["external_subscription_id"], r["properties"]) for r in sent]


def test_huge_and_precise_numbers_stay_exact(engine: Engine, tmp_path: Path) -> None:
    ingest_one(engine, tmp_path, "huge_numbers.jsonl")
    by_id = {e.transaction_id: e for e in events(engine)}
    values = query(
        engine,
        "select properties->>'tokens' as tokens, properties->>'big' as big,"
        " properties->>'neg' as neg, properties->>'digits' as digits"
        " from events where transaction_id = 'tx-8'",
    )
    assert tuple(values[0]) == (
        "0.1",
        "1234567890123456789012345",
        "-9876543210987654321098765",
        "0.30000000000000000004",
    )
    assert by_id["tx-9"].precise_total_amount_cents == Decimal(
        "1234567890123456789012345.123456789"
    )
    assert by_id["tx-7"].properties == {
        "u64": 18446744073709551615,
        "u64plus1": 18446744073709551616,
    }


def test_timestamps_are_converted_to_utc_and_bounds_are_inclusive(
    engine: Engine, tmp_path: Path
) -> None:
    got: dict[tuple[str, str], Any] = {}
    for fixture in (
        "timestamp_zones.jsonl",
        "timestamp_far_future.jsonl",
        "timestamp_before_1970.jsonl",
        "missing_optional.jsonl",
        "numeric_strings.jsonl",
    ):
        folder = tmp_path / fixture.split(".")[0]
        drop(folder, fixture)
        assert [r.status for r in ingest_folder(engine, folder)] == ["ingested"]
        got.update({(fixture, e.transaction_id): e for e in events(engine)})
        with engine.begin() as conn:
            conn.execute(text("delete from events"))  # the fixtures reuse transaction ids

    def at(fixture: str, txn: str) -> datetime:
        return got[(fixture, txn)].timestamp

    zones = "timestamp_zones.jsonl"
    assert at(zones, "tx-4") == datetime(2025, 11, 24, 16, tzinfo=UTC)  # 18:00+02:00
    assert at(zones, "tx-6") == datetime(2025, 11, 24, 21, 30, 0, 123456, tzinfo=UTC)
    bound = datetime(2025, 11, 26, tzinfo=UTC)  # written_at + 1 day, inclusive
    assert at("timestamp_far_future.jsonl", "tx-5") == bound
    assert at("timestamp_far_future.jsonl", "tx-6") == bound
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert at("timestamp_before_1970.jsonl", "tx-5") == epoch
    assert at("timestamp_before_1970.jsonl", "tx-6") == epoch  # 01:00+01:00
    optional = "missing_optional.jsonl"
    assert at(optional, "tx-1") == at(optional, "tx-4") == WRITTEN_AT  # no timestamp
    assert got[(optional, "tx-2")].properties == got[(optional, "tx-3")].properties == {}
    numeric = "numeric_strings.jsonl"
    assert at(numeric, "tx-3") == datetime(2025, 11, 24, 16, 0, 0, 250000, tzinfo=UTC)
    assert at(numeric, "tx-4") == datetime(2025, 11, 24, 16, 0, 0, 750000, tzinfo=UTC)


def test_duplicates_within_a_file_first_copy_wins(engine: Engine, tmp_path: Path) -> None:
    ingest_one(engine, tmp_path, "duplicates.jsonl")
    assert [
        (e.external_subscription_id, e.transaction_id, e.properties, e.row_number)
        for e in events(engine)
    ] == [
        (SUB, "tx-1", {"tokens": 1}, 1),
        (SUB, "tx-2", {"tokens": 1000, "model": "mistral-small", "type": "input"}, 3),
        ("sub_other", "tx-1", {"tokens": 4}, 5),
    ]


def test_rejected_rows_keep_their_raw_text(engine: Engine, tmp_path: Path) -> None:
    ingest_one(engine, tmp_path, "broken_json.jsonl")
    lines = (HOSTILE / "broken_json.jsonl").read_text().splitlines()
    assert {r.row_number: r.raw for r in rejected(engine)} == {
        n: lines[n - 1] for n in (2, 4, 5, 7, 8, 9)
    }


def test_a_megabyte_line_is_rejected_with_its_raw_text_cut(engine: Engine, tmp_path: Path) -> None:
    ingest_one(engine, tmp_path, "large_lines.jsonl.gz")
    raws = {r.row_number: r.raw for r in rejected(engine)}
    assert raws[2].startswith('{"transaction_id": "tx-2"')
    assert raws[2].endswith("...[truncated]")
    assert len(raws[2]) == MAX_RAW_KEPT + len("...[truncated]")


def test_csv_values_with_quotes_and_newlines_are_stored_exactly(
    engine: Engine, tmp_path: Path
) -> None:
    ingest_one(engine, tmp_path, "csv_quoted_newlines.csv")
    assert [e.properties for e in events(engine)] == [
        {"note": "line one\nline two"},
        {"note": 'say "hi", then\r\nleave'},
        {"note": "plain"},
    ]


# --------------------------------------------------------------------------------------------
# Object names, and the whole corpus in one run
# --------------------------------------------------------------------------------------------

ODD_NAMES = [
    "with space.jsonl",
    "dots..in..name.jsonl",
    "..leading-dots.jsonl",
    "q?hash#pct%20[br]{c}*.jsonl",
    "ünïcödé-😀.jsonl",
    "semi;colon,comma'quote\".jsonl",
    "sub dir/a  b.jsonl",
    "~tilde$dollar&amp+plus=eq.jsonl",
]


def test_odd_object_names_ingest_and_are_recorded_as_listed(engine: Engine, bucket: Bucket) -> None:
    payload = (HOSTILE / "odd_name.jsonl").read_bytes()
    for n, name in enumerate(ODD_NAMES):
        # a distinct subscription per object, so each one's two events are new
        bucket.put(name, payload.replace(SUB.encode(), f"sub-{n}".encode()))
    source = build_source(bucket.spec())
    listed = sorted(ref.url for ref in source.list())
    assert len(listed) == len(ODD_NAMES)
    for name in ODD_NAMES:
        assert sum(url.endswith("/" + name) for url in listed) == 1, (name, listed)
    ids = register_objects(engine, source.key, source.list())
    results = [ingest_object(engine, source, i) for i in ids]
    assert [(r.status, r.error, r.accepted) for r in results] == [("ingested", None, 2)] * len(
        ODD_NAMES
    )
    recorded = sorted(row.path for row in query(engine, "select path from ingest_objects"))
    assert recorded == listed
    (count,) = query(engine, "select count(*) as n from events")
    assert count.n == 2 * len(ODD_NAMES)


def test_the_whole_corpus_in_one_run_never_crashes_and_never_loads_half(
    engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "bucket"
    for fixture in CASES:
        drop(folder, fixture)
    results = {r.url.rsplit("/", 1)[-1]: r for r in ingest_folder(engine, folder, chunk_rows=3)}
    assert set(results) == set(CASES)
    for fixture, expected in CASES.items():
        want = "failed" if isinstance(expected, Fails) else "ingested"
        assert results[fixture].status == want, (fixture, results[fixture].error)
    failed = query(
        engine,
        "select o.path from ingest_objects o where o.status = 'failed' and (exists"
        " (select 1 from events e where e.object_id = o.id) or exists"
        " (select 1 from rejected_rows r where r.object_id = o.id))",
    )
    assert failed == []
    per_object = {
        row.path.rsplit("/", 1)[-1]: (row.accepted, row.rejected)
        for row in query(
            engine,
            "select o.path, (select count(*) from events e where e.object_id = o.id) as accepted,"
            " (select count(*) from rejected_rows r where r.object_id = o.id) as rejected"
            " from ingest_objects o",
        )
    }
    for fixture, expected in CASES.items():
        if isinstance(expected, Loads):
            # across objects, an id already stored by an earlier object is a duplicate here, or
            # a conflict (a rejected row) when its content differs
            accepted, refused = per_object[fixture]
            got = results[fixture]
            assert refused == len(expected.rejected) - expected.conflicts + got.conflicts, fixture
            assert accepted + got.duplicates + got.conflicts == len(expected.accepted) + (
                expected.duplicates + expected.conflicts
            ), fixture
    # a second run retries only the failed objects, which fail the same way again
    again = ingest_folder(engine, folder)
    assert {r.status for r in again} == {"failed"}
    assert len(again) == sum(isinstance(e, Fails) for e in CASES.values())
