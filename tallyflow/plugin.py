"""The plugin contract: everything a source or mapping package imports from Tallyflow.

A plugin imports from here and nowhere else, so Tallyflow's own modules can move (the
architecture round groups ``tasks/`` by feature) without breaking installed plugins. The names
below are the contract; ``CONTRACT_VERSION`` changes only when one of them changes in a way a
plugin would notice (a name removed, a method a source must implement added). Plugins written
against the older path, ``tallyflow.tasks.sources``, keep working: it stays an alias.

What each name is for (docs/ingest.md, "Adding a source"):

- ``Source`` (subclass it: ``kind``, ``Config``, ``list()``, ``open()``; ``golden_case`` and
  ``missing_case`` for the conformance suite), ``ObjectRef`` (one listed object),
  ``SourceSpec`` (what a run asks a source to read), ``SourceError`` (the one error a source
  raises for "cannot list": missing, unreachable, no access; one line and a hint);
- ``Mapping`` (subclass it: ``name``, ``Options``, ``map(record, options)``), what ``map``
  returns (a dict, ``Events``, a ``Rejection``), ``NoOptions``, and ``DeclarativeMapping`` /
  ``MappingInvalid`` to ship a mapping written as data;
- ``FORMATS`` (what ``ObjectRef.format`` may say: the readers are built in, a plugin does not
  add formats), ``SOURCE_GROUP`` / ``MAPPING_GROUP`` (the entry point groups), ``PluginWarning``;
- ``build_source`` and ``resolve_mapping``: the registry's view, as a run sees it.

The conformance suite a plugin runs against an installed Tallyflow is
``tallyflow.testing.conformance`` (``pytest --tallyflow-conformance``).
"""

from __future__ import annotations

from tallyflow.errors import SourceError
from tallyflow.models.events import Reason, Rejection
from tallyflow.models.mappings import (
    DeclarativeMapping,
    Events,
    Mapping,
    MappingInvalid,
    MapResult,
    NoOptions,
)
from tallyflow.tasks.ingest import (
    FORMATS,
    MAPPING_GROUP,
    SOURCE_GROUP,
    ObjectRef,
    PluginWarning,
    Source,
    SourceSpec,
    build_source,
    resolve_mapping,
)

# The contract's version: a plugin may check it (``CONTRACT_VERSION >= 1``) before relying on
# a name added later.
CONTRACT_VERSION = 1

__all__ = [
    "CONTRACT_VERSION",
    "FORMATS",
    "MAPPING_GROUP",
    "SOURCE_GROUP",
    "DeclarativeMapping",
    "Events",
    "MapResult",
    "Mapping",
    "MappingInvalid",
    "NoOptions",
    "ObjectRef",
    "PluginWarning",
    "Reason",
    "Rejection",
    "Source",
    "SourceError",
    "SourceSpec",
    "build_source",
    "resolve_mapping",
]
