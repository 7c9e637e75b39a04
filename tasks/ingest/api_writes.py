"""The API's objects in the ingest watermark: reserved before they are written, marked covered.

``tallyflow api`` answers a request once its events are in an object (tallyflow/api/pipeline.py)
and loads that object itself, outside any ingest run. For the ingest watermark
(tasks/invoicing/watermark.py) to cover those objects (docs/architecture.md §23):

- **Reserve before writing.** ``reserve`` commits a row of ``api_writes`` (the object's URL,
  ``begun_at = clock_timestamp()``) before the object is written. Until that object is
  ingested, the row caps the watermark at ``begun_at``, whatever happens to the process: an
  object written and never registered (kill -9 between the write and the loader) holds the
  watermark back, it cannot slip past it.
- **Mark.** ``mark`` records the API's listing time: every object begun before it is reserved.
  It takes a SHARE lock on ``api_writes`` before reading the clock: a reservation whose
  insert had begun is committed first (and seen with the mark), one that begins after has a
  later ``begun_at`` (its row lock comes before its ``clock_timestamp()``).
- **Sweep.** ``open_writes`` gives the reservations whose object is not ingested: the API
  registers and loads those whose object exists (what a crashed process wrote), and
  ``forget`` drops those whose object was never written once they are older than
  ``TALLYFLOW_STALE_SECONDS`` (no write takes that long; nothing of them was answered 200).
  ``drop_ingested`` deletes the rows of ingested objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

from tallyflow.infra.settings import get_settings

_RESERVE = text(
    "insert into api_writes (source, path) values (:source, :path) on conflict (path) do nothing"
)
_FORGET = text("delete from api_writes where path = any(cast(:paths as text[]))")
_MARK = text(
    """
    insert into api_mark (id, marked_at) values (1, clock_timestamp())
    on conflict (id) do update
      set marked_at = greatest(api_mark.marked_at, excluded.marked_at)
    returning marked_at
    """
)
# A reservation is open while no version of its object is ingested.
_OPEN = text(
    """
    select w.path, w.begun_at, w.begun_at < now() - make_interval(secs => :stale) as stale
    from api_writes w
    where w.source = :source
      and not exists (select 1 from ingest_objects o where o.source = w.source
                      and o.path = w.path and o.status = 'ingested')
    order by w.begun_at, w.path
    """
)
_DROP_INGESTED = text(
    """
    delete from api_writes w using ingest_objects o
    where o.source = w.source and o.path = w.path and o.status = 'ingested'
    """
)


@dataclass(frozen=True)
class OpenWrite:
    path: str
    begun_at: datetime
    stale: bool  # older than TALLYFLOW_STALE_SECONDS: its writer is done, or dead


def reserve(engine: Engine, source_key: str, path: str) -> None:
    """Commit the reservation of the object about to be written at ``path``."""
    with engine.begin() as conn:
        conn.execute(_RESERVE, {"source": source_key, "path": path})


def forget(engine: Engine, paths: list[str]) -> None:
    """Drop reservations whose object was never written (a failed write; a dead writer's)."""
    if paths:
        with engine.begin() as conn:
            conn.execute(_FORGET, {"paths": paths})


def mark(engine: Engine) -> datetime:
    """Advance the API's mark to now: every object begun before it is reserved."""
    with engine.begin() as conn:
        conn.execute(text("lock table api_writes in share mode"))
        marked: datetime = conn.execute(_MARK).scalar_one()
        return marked


def open_writes(engine: Engine, source_key: str) -> list[OpenWrite]:
    """The reservations of ``source_key`` whose object is not ingested, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            _OPEN, {"source": source_key, "stale": get_settings().stale_seconds}
        ).all()
    return [OpenWrite(row.path, row.begun_at, bool(row.stale)) for row in rows]


def drop_ingested(engine: Engine) -> int:
    """Delete the reservations whose object is ingested (they hold nothing any more)."""
    with engine.begin() as conn:
        return conn.execute(_DROP_INGESTED).rowcount
