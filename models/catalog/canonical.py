"""Canonical JSON for catalog documents: Decimal-safe dumps and loads, and digests.

An apply compares digests of the normal form to find what changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def format_datetime(moment: datetime) -> str:
    """UTC ISO-8601 with ``Z``: one text per instant so digests do not depend on the offset."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_decimal(value: Decimal) -> str:
    """Plain positional text (``1E+2`` -> ``100``), the form Postgres jsonb also writes back."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value}")
    return format(value, "f")


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """JSON text with sorted keys; ``Decimal`` written as a JSON number without float.

    The standard encoder can only write Decimals through float, which would lose digits, so the
    catalog writes its own (small) JSON. Floats are refused outright.
    """
    out: list[str] = []
    _write_json(obj, out, indent, 0)
    return "".join(out)


def _write_json(obj: Any, out: list[str], indent: int | None, level: int) -> None:
    if obj is None or isinstance(obj, bool):
        out.append({None: "null", True: "true", False: "false"}[obj])
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, Decimal):
        out.append(format_decimal(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, datetime):
        out.append(json.dumps(format_datetime(obj)))
    elif isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))]
        _write_container("{", "}", items, out, indent, level)
    elif isinstance(obj, list | tuple):
        _write_container("[", "]", [(None, v) for v in obj], out, indent, level)
    else:
        raise TypeError(f"cannot write {type(obj).__name__} as catalog JSON (floats are refused)")


def _write_container(
    open_: str,
    close: str,
    items: Sequence[tuple[str | None, Any]],
    out: list[str],
    indent: int | None,
    level: int,
) -> None:
    if not items:
        out.append(open_ + close)
        return
    inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
    outer = "" if indent is None else "\n" + " " * (indent * level)
    out.append(open_)
    for position, (key, value) in enumerate(items):
        out.append(("," if position else "") + inner)
        if key is not None:
            out.append(json.dumps(key, ensure_ascii=False) + (":" if indent is None else ": "))
        _write_json(value, out, indent, level + 1)
    out.append(outer + close)


def loads(text: str) -> Any:
    """JSON text -> Python with every non-integer number as ``Decimal`` (never float)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def digest(document: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON: equal documents, equal digests, whatever the key order."""
    return hashlib.sha256(dumps(document).encode()).hexdigest()
