"""The one exact JSON reader: what ingest reads and what billing reads back agree on numbers."""

import json
from decimal import Decimal

import pytest

from tallyflow.models.exact_json import loads_exact


def _floats(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [f for item in value for f in _floats(item)]
    return []


@pytest.mark.parametrize(
    "text",
    [
        '{"tokens": 1234, "model": "mistral-small"}',
        '{"tokens": 0.1, "nested": [{"x": 2.50}, -0.0]}',
        '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
        '{"2025-01-01": 12.5, "2025-01-02": 3}',
        '[{"key": "model", "values": ["a", "b"]}]',
        '"text"',
        "null",
    ],
)
def test_parses_as_python_with_exact_decimals(text: str) -> None:
    """Stored JSON (jsonb's text) parses exactly as Python's reader with Decimal floats, and
    no binary float comes out, whether given as text or bytes."""
    expected = json.loads(text, parse_float=Decimal)
    for data in (text, text.encode()):
        value = loads_exact(data)
        assert value == expected
        assert not _floats(value)


def test_a_null_column_is_none() -> None:
    assert loads_exact(None) is None


def test_a_number_beyond_doubles_is_exact() -> None:
    assert loads_exact(b'{"n": 1e400}') == {"n": Decimal("1e400")}


@pytest.mark.parametrize("text", ['{"n": NaN}', '{"n": Infinity}', '"\\ud800"'])
def test_what_is_not_json_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads_exact(text)
