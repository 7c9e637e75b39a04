"""Ingest: objects in, events out: sources and their registry, readers, mappings, the loader,
claims of dead runs, rejects, previews and replays of changed objects.

This ``__init__`` is the room's only way in from outside it (docs/architecture.md §8): flows,
the CLI, the API and the other rooms import from here, so the modules inside may be split or
merged without touching them. ``tallyflow.tasks.sources`` and ``tallyflow.tasks.plugins`` stay
importable as aliases (the plugin surface).
"""

from tallyflow.tasks.ingest import api_writes, mappings, plugins
from tallyflow.tasks.ingest.claims import reclaim_dead_claims_task, watermark_holder
from tallyflow.tasks.ingest.columnar import staged_jsonl
from tallyflow.tasks.ingest.load import (
    DEFAULT_CHUNK_ROWS,
    INGEST_RETRIES,
    ObjectResult,
    finish_run,
    ingest_object,
    ingest_object_task,
    ledger_spec,
    list_new_objects,
    register_objects,
    requeue,
    start_run,
)
from tallyflow.tasks.ingest.mapping_preview import preview
from tallyflow.tasks.ingest.mappings import is_mapping_file
from tallyflow.tasks.ingest.plugins import (
    MAPPING_GROUP,
    SOURCE_GROUP,
    PluginWarning,
)
from tallyflow.tasks.ingest.readers import (
    FORMATS,
    READERS,
    loads_exact,
    read_jsonl,
)
from tallyflow.tasks.ingest.rejects import (
    count_by_reason,
    count_unbillable,
    iter_rejects,
    list_rejects,
    list_unbillable,
    mark_exported,
)
from tallyflow.tasks.ingest.replay import other_settings, plan_replay, replayed, rerate_replay
from tallyflow.tasks.ingest.sources import (
    DEFAULT_MAPPING,
    FsspecOptions,
    FsspecSource,
    ObjectRef,
    Source,
    SourceSpec,
    as_spec,
    build_source,
    protocol_of,
    resolve_mapping,
    source_parameter,
    spec_model,
)
from tallyflow.tasks.ingest.staging import validated

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAPPING",
    "FORMATS",
    "INGEST_RETRIES",
    "MAPPING_GROUP",
    "READERS",
    "SOURCE_GROUP",
    "FsspecOptions",
    "FsspecSource",
    "ObjectRef",
    "ObjectResult",
    "PluginWarning",
    "Source",
    "SourceSpec",
    "api_writes",
    "as_spec",
    "build_source",
    "count_by_reason",
    "count_unbillable",
    "finish_run",
    "ingest_object",
    "ingest_object_task",
    "is_mapping_file",
    "iter_rejects",
    "ledger_spec",
    "list_new_objects",
    "list_rejects",
    "list_unbillable",
    "loads_exact",
    "mappings",
    "mark_exported",
    "other_settings",
    "plan_replay",
    "plugins",
    "preview",
    "protocol_of",
    "read_jsonl",
    "reclaim_dead_claims_task",
    "register_objects",
    "replayed",
    "requeue",
    "rerate_replay",
    "resolve_mapping",
    "source_parameter",
    "spec_model",
    "staged_jsonl",
    "start_run",
    "validated",
    "watermark_holder",
]
