"""The registry of sources and record mappings: built-ins, then installed plugins.

Built-ins are named here as ``module:attribute`` strings (plus every mapping file in
``tasks/ingest/mappings/``) and imported on first use, so a source
module may import ``tallyflow.tasks.ingest.sources`` freely (no circular import, nothing
depends on import order). Out-of-tree packages add theirs through entry points::

    [project.entry-points."tallyflow.sources"]
    outbox = "my_package.outbox:OutboxSource"

    [project.entry-points."tallyflow.mappings"]
    my_usage = "my_package.usage:MAPPING"

Everything is loaded once per process. A plugin that fails to import or is not what it says is
reported (a warning, and ``tallyflow sources list`` shows it with its error) instead of taking
every other source down with it: a typo in one package must not stop billing.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tallyflow.models.mappings import Mapping
    from tallyflow.tasks.ingest.sources import Source

SOURCE_GROUP = "tallyflow.sources"
MAPPING_GROUP = "tallyflow.mappings"

BUILTIN_SOURCES = {"fsspec": "tallyflow.tasks.ingest.sources:FsspecSource"}
BUILTIN_MAPPINGS = {
    "lago": "tallyflow.models.mappings:LAGO",
    "cloudevents": "tallyflow.models.mappings:CLOUDEVENTS",
    "otel-genai": "tallyflow.models.otel_genai:OTEL_GENAI",
}
# Declarative built-ins: every *.yaml in tasks/ingest/mappings/ (one file plus its golden fixture
# each;
# adding one needs no edit here).
BUILTIN_MAPPING_SETS = ("tallyflow.tasks.ingest.mappings:BUILTIN",)


class PluginWarning(UserWarning):
    """A plugin could not be loaded; everything else still works."""


@dataclass(frozen=True)
class BrokenPlugin:
    group: str
    name: str
    target: str
    error: str


@dataclass
class Registry:
    sources: dict[str, type[Source]]
    mappings: dict[str, Mapping]
    broken: list[BrokenPlugin]
    origin: dict[str, str]  # "source:kind" / "mapping:name" -> "built-in" or the distribution


_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    """Load built-ins and entry points once (thread-safe: flows run tasks in threads)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = _load()
    return _registry


def sources() -> dict[str, type[Source]]:
    return registry().sources


def mappings() -> dict[str, Mapping]:
    return registry().mappings


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split(".") if attribute else ():
        value = getattr(value, part)
    return value


def _load() -> Registry:
    from tallyflow.models.mappings import Mapping
    from tallyflow.tasks.ingest.sources import Source

    found = Registry({}, {}, [], {})

    def add(group: str, name: str, target: str, value: Any, origin: str) -> None:
        if group == SOURCE_GROUP:
            if not (isinstance(value, type) and issubclass(value, Source)):
                raise TypeError(f"{target} is not a tallyflow.tasks.sources.Source subclass")
            if value.kind != name:
                raise ValueError(f"{target} has kind {value.kind!r}, registered as {name!r}")
            table: dict[str, Any] = found.sources
            key = f"source:{name}"
        else:
            if not isinstance(value, Mapping):
                raise TypeError(f"{target} is not a tallyflow.models.mappings.Mapping")
            if value.name != name:
                raise ValueError(f"{target} is named {value.name!r}, registered as {name!r}")
            table = found.mappings
            key = f"mapping:{name}"
        if name in table:
            raise ValueError(f"{name!r} is already registered by {found.origin[key]}")
        table[name] = value
        found.origin[key] = origin

    installed = entry_points()  # one scan of the installed distributions for both groups
    for group, builtins in ((SOURCE_GROUP, BUILTIN_SOURCES), (MAPPING_GROUP, BUILTIN_MAPPINGS)):
        for name, target in builtins.items():
            add(group, name, target, _resolve(target), "built-in")  # a broken built-in is a bug
        if group == MAPPING_GROUP:
            for collection in BUILTIN_MAPPING_SETS:
                for name, mapping in _resolve(collection).items():
                    add(group, name, f"{collection}[{name}]", mapping, "built-in")
        for point in sorted(installed.select(group=group), key=lambda p: (p.name, p.value)):
            dist = point.dist.name if point.dist is not None else "?"
            try:
                add(group, point.name, point.value, point.load(), dist)
            except Exception as exc:
                broken = BrokenPlugin(group, point.name, point.value,
                                      f"{type(exc).__name__}: {exc}"[:500])
                found.broken.append(broken)
                warnings.warn(
                    f"tallyflow plugin {point.name!r} ({group}, {point.value}, from {dist}) "
                    f"not loaded: {broken.error}",
                    PluginWarning,
                    stacklevel=2,
                )
    return found
