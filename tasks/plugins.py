"""Alias of ``tallyflow.tasks.ingest.plugins`` (docs/architecture.md §8).

``tallyflow.tasks.plugins`` is part of the public surface: plugin packages import from it. The
module lives in the ingest room now; this path re-exports its public names, the same objects.
"""

from tallyflow.tasks.ingest.plugins import (
    BUILTIN_MAPPING_SETS,
    BUILTIN_MAPPINGS,
    BUILTIN_SOURCES,
    MAPPING_GROUP,
    SOURCE_GROUP,
    BrokenPlugin,
    PluginWarning,
    Registry,
    mappings,
    registry,
    sources,
)

__all__ = [
    "BUILTIN_MAPPINGS",
    "BUILTIN_MAPPING_SETS",
    "BUILTIN_SOURCES",
    "BrokenPlugin",
    "MAPPING_GROUP",
    "PluginWarning",
    "Registry",
    "SOURCE_GROUP",
    "mappings",
    "registry",
    "sources",
]
