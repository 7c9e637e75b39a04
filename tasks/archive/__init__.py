"""Archive: events and snapshots of finalized periods moved to Parquet, and read back.

The room's only way in from outside it (docs/architecture.md §8).
"""

from tallyflow.tasks.archive.events import (
    ArchiveRefused,
    ArchiveSummary,
    archive_events,
    read_archive,
)
from tallyflow.tasks.archive.snapshots import archive_snapshots

__all__ = [
    "ArchiveRefused",
    "ArchiveSummary",
    "archive_events",
    "archive_snapshots",
    "read_archive",
]
