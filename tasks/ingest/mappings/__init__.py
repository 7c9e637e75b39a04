"""Declarative mappings: one YAML/JSON file each (plus its golden fixture), read on first use.

``load_file`` is also what ``--mapping FILE`` and the flow form use for a user's own mapping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tallyflow.models.mappings import DeclarativeMapping, MappingInvalid

HERE = Path(__file__).resolve().parent


def load_file(path: str | Path) -> DeclarativeMapping:
    """A mapping file; every problem is a ``MappingInvalid`` naming the file and the place."""
    return _load(Path(path), yaml.SafeLoader)


def _load(path: Path, loader: Any) -> DeclarativeMapping:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingInvalid(f"{path}: cannot read the mapping file ({exc.strerror})") from None
    try:
        data: Any = (json.loads(text) if path.suffix.lower() == ".json"
                     else yaml.load(text, Loader=loader))  # a SafeLoader
    except (ValueError, yaml.YAMLError) as exc:
        raise MappingInvalid(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    place = None if path.suffix.lower() == ".json" else _places(text, loader)
    return DeclarativeMapping.from_data(data, str(path), base=path.parent, place=place)


def _places(text: str, loader: Any) -> Callable[[tuple[Any, ...]], str | None]:
    """Where a validation error's location is in the YAML text: "line L, column C" of the
    value (of the deepest part of the location that exists), so a bad path is found at once."""

    def place(loc: tuple[Any, ...]) -> str | None:
        try:
            node = yaml.compose(text, Loader=loader)
        except yaml.YAMLError:
            return None
        root = found = node
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and part < len(node.value):
                node = node.value[part]
            else:
                node = None
            if node is None:
                break
            found = node
        if found is None or found is root:  # a missing key: no place to show
            return None
        mark = found.start_mark
        return f"line {mark.line + 1}, column {mark.column + 1}"

    return place


def is_mapping_file(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml", ".json"))


# The built-in files are read by every command that ingests: libyaml's parser (same safe
# constructors and resolvers, so the same data) reads them much faster (docs/scaling.md §6). A
# user's file keeps the pure-Python parser, whose error messages (line, column, excerpt) it shows.
_FAST_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _builtins() -> dict[str, DeclarativeMapping]:
    found: dict[str, DeclarativeMapping] = {}
    for path in sorted(HERE.glob("*.yaml")):
        mapping = _load(path, _FAST_SAFE_LOADER)
        if mapping.name in found:
            raise MappingInvalid(f"{path}: mapping {mapping.name!r} is defined twice")
        found[mapping.name] = mapping
    return found


# Every *.yaml here, by the name it declares (tallyflow.tasks.ingest.plugins registers them).
BUILTIN = _builtins()
