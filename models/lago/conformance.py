"""Does a real value have a TypedDict's shape? (docs/architecture.md §11)

The shapes in this package are promises about JSON already on the wire; tests hold real
outputs (CLI ``--json``, flow results, API bodies) to them with :func:`mismatches`, so a key
added, lost or retyped on either side fails a test instead of a client.
"""

from __future__ import annotations

import types
import typing
from typing import Any, NotRequired, Required, Union, get_args, get_origin, get_type_hints


def mismatches(value: Any, shape: Any, where: str = "$") -> list[str]:
    """Every place where ``value`` departs from ``shape`` (a TypedDict or a type inside one):
    missing required keys, keys the shape does not name, values of another type. Empty when
    it conforms."""
    if shape is Any:
        return []
    origin = get_origin(shape)
    if origin in (Required, NotRequired):
        return mismatches(value, get_args(shape)[0], where)
    if origin in (Union, types.UnionType):
        options = [mismatches(value, option, where) for option in get_args(shape)]
        if any(not found for found in options):
            return []
        if isinstance(value, dict | list):  # the closest option says where it departs
            return min(options, key=len)
        return [f"{where}: {type(value).__name__} {value!r} is not {_name(shape)}"]
    if shape is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    if typing.is_typeddict(shape):
        return _typed_dict(value, shape, where)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} is not a list"]
        (item,) = get_args(shape) or (Any,)
        return [m for i, v in enumerate(value) for m in mismatches(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} is not an object"]
        key, item = get_args(shape) or (Any, Any)
        return [m for k, v in value.items()
                for m in (mismatches(k, key, f"{where} key") + mismatches(v, item, f"{where}.{k}"))]
    if shape is float:  # JSON writes a whole float as an integer
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number"]
    if shape is int and isinstance(value, bool):
        return [f"{where}: {value!r} is a boolean, not an integer"]
    if isinstance(shape, type):
        return [] if isinstance(value, shape) else [
            f"{where}: {type(value).__name__} {value!r} is not {shape.__name__}"]
    raise TypeError(f"{where}: cannot check against {shape!r}")


def _typed_dict(value: Any, shape: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__} is not a {shape.__name__}"]
    hints = get_type_hints(shape)
    found = [f"{where}: {shape.__name__} lacks {key!r}"
             for key in sorted(shape.__required_keys__ - value.keys())]
    found += [f"{where}: {key!r} is not a key of {shape.__name__}"
              for key in sorted(value.keys() - hints.keys())]
    for key in value.keys() & hints.keys():
        found += mismatches(value[key], hints[key], f"{where}.{key}")
    return found


def _name(shape: Any) -> str:
    if get_origin(shape) in (Union, types.UnionType):
        return " | ".join(_name(option) for option in get_args(shape))
    return "null" if shape is type(None) else getattr(shape, "__name__", repr(shape))
