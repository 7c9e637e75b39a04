"""Alias of ``tallyflow.tasks.ingest.sources`` (docs/architecture.md §8).

``tallyflow.tasks.sources`` is part of the public surface: plugin packages import from it. The
module lives in the ingest room now; this path re-exports its public names, the same objects.
"""

from tallyflow.tasks.ingest.sources import (
    DEFAULT_MAPPING,
    S3_CONNECT_TIMEOUT,
    S3_PROBE_SECONDS,
    S3_READ_TIMEOUT,
    S3FS_RETRIES,
    FsspecOptions,
    FsspecSource,
    Mapping,  # what the guide's examples took from here before tallyflow.plugin
    ObjectRef,
    Source,
    SourceError,  # plugins raise it (tallyflow.errors)
    SourceSpec,
    as_spec,
    build_source,
    protocol_of,
    resolve_mapping,
    source_parameter,
    spec_model,
)

__all__ = [
    "DEFAULT_MAPPING",
    "FsspecOptions",
    "FsspecSource",
    "Mapping",
    "ObjectRef",
    "S3FS_RETRIES",
    "S3_CONNECT_TIMEOUT",
    "S3_PROBE_SECONDS",
    "S3_READ_TIMEOUT",
    "Source",
    "SourceError",
    "SourceSpec",
    "as_spec",
    "build_source",
    "protocol_of",
    "resolve_mapping",
    "source_parameter",
    "spec_model",
]
