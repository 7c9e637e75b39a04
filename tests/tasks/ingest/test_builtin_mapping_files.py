"""The built-in mapping files are read with libyaml's parser (start-up cost); they must mean
exactly what the pure-Python parser, which reads a user's mapping file, makes of them."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tallyflow.models.events import TimeBounds
from tallyflow.models.number_rule import numbers_out_of_range
from tallyflow.tasks.ingest import (
    SourceSpec,
    build_source,
    loads_exact,
    mappings,
    plugins,
    read_jsonl,
)
from tallyflow.tasks.ingest.staging import stage_rows


@pytest.mark.parametrize("path", sorted(mappings.HERE.glob("*.yaml")), ids=lambda p: p.name)
def test_a_built_in_file_reads_the_same_with_either_parser(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert yaml.load(text, Loader=mappings._FAST_SAFE_LOADER) == yaml.safe_load(text)


def test_the_built_ins_use_libyaml_where_it_is_installed() -> None:
    assert mappings._FAST_SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__
                                          else yaml.SafeLoader)
    assert set(mappings.BUILTIN) == {
        mappings.load_file(p).name for p in mappings.HERE.glob("*.yaml")}


# --------------------------------------------------------------------------------------------
# The number rule (models/number_rule.py) through every built-in mapping
# --------------------------------------------------------------------------------------------

_HOSTILE_NUMBERS: list[Any] = [Decimal("1E+400"), Decimal("-1E+308"), Decimal("1E+308"),
                               123456789012345678901234567890, 10**25,
                               Decimal("0." + "0" * 39 + "1")]
_HOSTILE_TEXT = ["1" * 30, "-" + "9" * 26]
# batch_http_error: an OpenAI Batch line's status_code is not a count; any status but 200 (a
# hostile number included) refuses the line as the request's failure (docs/llm-usage.md)
_ALLOWED = {"number_out_of_range", "timestamp_out_of_range", "invalid_timestamp",
            "invalid_number", "wrong_type", "batch_http_error"}
_BOUNDS = TimeBounds(written_at=datetime(2025, 11, 25, tzinfo=UTC))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of the numbers and digit strings of a record: where a count could be."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return [path]
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return [path]
    return []


def _replaced(record: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = loads_exact(orjson.dumps(record, default=str))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def _goldens() -> list[tuple[str, Path]]:
    found = [(m.name, m.golden) for m in plugins.mappings().values()
             if m.golden is not None and m.golden.exists()]
    return sorted(found)


@pytest.mark.parametrize("name, golden", _goldens(), ids=lambda v: str(v).split("/")[-1])
def test_every_built_in_mapping_refuses_numbers_out_of_range(name: str, golden: Path) -> None:
    """Each number (and digit string) of each golden record replaced by a hostile one: the
    record is refused with a reason (``number_out_of_range`` for the counts), or its events
    carry no number outside the bound -- never an exception, never such a number stored."""
    source = build_source(SourceSpec(url="file:///nowhere", mapping=name))
    refused: set[str] = set()
    for line in golden.read_bytes().splitlines():
        if not line.strip():
            continue
        record = loads_exact(line)
        if stage_rows([(1, record, None)], source, _BOUNDS)[1]:
            continue  # a golden record refused as it is (the fixtures hold some on purpose)
        for path in _leaves(record):
            original = _value_at(record, path)
            for hostile in (_HOSTILE_TEXT if isinstance(original, str) else _HOSTILE_NUMBERS):
                lines, rejected, _ = stage_rows([(1, _replaced(record, path, hostile), None)],
                                             source, _BOUNDS)
                for _, rejection, *_ in rejected:
                    assert str(rejection.reason) in _ALLOWED, (path, hostile, rejection)
                    refused.add(str(rejection.reason))
                for staged in lines:
                    properties = loads_exact(staged.split("\t")[6])
                    assert list(numbers_out_of_range(properties, "properties")) == [], (
                        path, hostile, staged)
    assert "number_out_of_range" in refused


def _value_at(record: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        record = record[step]
    return record


def test_a_mapping_refuses_an_out_of_range_count_by_its_source_field() -> None:
    source = build_source(SourceSpec(url="file:///nowhere", mapping="openai-chat"))
    line = (b'{"id": "c1", "created": 1764000000, "model": "gpt-4o", "user": "s",'
            b' "usage": {"prompt_tokens": 1e400, "completion_tokens": 3}}\n')
    (_, record, _), = next(read_jsonl(io.BytesIO(line), 10))
    _, rejected, _ = stage_rows([(1, record, line)], source, _BOUNDS)
    [(_, rejection, raw)] = rejected
    assert (str(rejection.reason), rejection.field) == ("number_out_of_range",
                                                        "usage.prompt_tokens")
    assert "1e25" in rejection.message and raw == line.decode().rstrip("\n")
