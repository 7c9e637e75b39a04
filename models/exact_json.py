"""JSON parsed exactly: the one reader of JSON text into Python values for billing.

Ingest reads every event with it (``tasks/ingest/readers.py``), and the billing steps read the JSON
they stored (states, properties, filters, catalog documents) with it too, so a number means the
same wherever it is read: an integer stays an exact ``int``, any other number is a ``Decimal``
(never a binary float), and what Python's reader would accept beyond JSON (NaN, Infinity, a
lone surrogate) is refused as orjson refuses it. See docs/architecture.md §4.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        for item in value.values():
            item_kind = type(item)
            if item_kind is float or (
                (item_kind is dict or item_kind is list) and _has_float(item)
            ):
                return True
        return False
    if kind is list:
        return any(_has_float(item) for item in value)
    return False


def loads_exact(data: bytes | str | None) -> Any:
    """Parse JSON fast, but never let a float stand in for a decimal (``None`` for ``None``:
    a null column read back from the database).

    orjson turns 0.1 and integers beyond 64 bits into binary floats; usage quantities and
    amounts must stay exact, so a document containing any float is parsed again into Decimals.
    NaN and Infinity are not JSON and are refused by orjson before the second parse. A number
    too large for a double (``1e400``) is JSON all the same: orjson refuses it, so that document
    is parsed by Python's reader alone, and the number reaches validation as the exact Decimal
    it is, to be refused there by the number rule (docs/architecture.md §7) with its reason
    (``number_out_of_range``), not as broken JSON.
    """
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if _INFINITE_DOUBLE not in str(exc):
            raise
        return _python_loads(data)
    try:
        if _has_float(value):
            return json.loads(data, parse_float=Decimal)
    except RecursionError:
        # orjson nests up to 1024 levels; Python's recursion stops a little earlier. Report it
        # as bad JSON (one rejected row) rather than letting it escape and fail the object.
        raise ValueError("JSON is nested too deeply") from None
    return value


# orjson's message for a JSON number beyond the double range; only then is the document read
# again by Python's parser (which keeps the number as a Decimal).
_INFINITE_DOUBLE = "infinity when parsed as double"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _python_loads(data: bytes | str) -> Any:
    """Python's reader, held to orjson's other refusals: it takes a lone surrogate
    (``"\\ud800"``), which is no text PostgreSQL can store."""
    try:
        value = json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
        _refuse_surrogates(value)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    return value


def _refuse_surrogates(value: Any) -> None:
    kind = type(value)
    if kind is str:
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
    elif kind is dict:
        for key, item in value.items():
            key.encode("utf-8")
            _refuse_surrogates(item)
    elif kind is list:
        for item in value:
            _refuse_surrogates(item)


__all__ = ["loads_exact"]
