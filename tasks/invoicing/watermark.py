"""Settings of the period close, and the ingest watermark.

The watermark says when a period may be finalized: every object listed by a finished ingest
run is loaded, capped by the oldest object still waiting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import Connection, text

from tallyflow.infra.settings import Settings, get_settings

SETTLE_ENV: Final = "TALLYFLOW_INVOICE_SETTLE_HOURS"


PREFIX_ENV: Final = "TALLYFLOW_INVOICE_PREFIX"


DEFAULT_SETTLE_HOURS: Final[int] = Settings.model_fields["invoice_settle_hours"].default


DEFAULT_PREFIX: Final[str] = Settings.model_fields["invoice_prefix"].default


LISTED_IN_SUMMARY: Final = 50


def settle_hours() -> int:
    return get_settings().invoice_settle_hours


def invoice_prefix() -> str:
    return get_settings().invoice_prefix


# ``api_mark`` and ``api_writes``: `tallyflow api`'s listing time and the objects it began to
# write and has not ingested (tasks/ingest/api_writes.py, docs/architecture.md §23).
_WATERMARK = text(
    """
    select greatest(
             (select max(started_at) from ingest_runs where finished_at is not null and listed),
             (select marked_at from api_mark where id = 1)) as listed,
           least(
             (select min(discovered_at) from ingest_objects where status <> 'ingested'),
             (select min(w.begun_at) from api_writes w
              where not exists (select 1 from ingest_objects o where o.source = w.source
                                and o.path = w.path and o.status = 'ingested'))) as waiting
    """
)


def ingest_watermark(conn: Connection) -> datetime | None:
    """Up to when every event is known to be loaded: the start (listing time) of the last
    finished ingest run, or the API's mark if later, but no later than the oldest object still
    not loaded (an object the API reserved counts from its reservation). None when
    nothing was ever ingested: then no invoice is finalized (nothing says usage is complete).

    A reclaim (tasks/ingest/claims.py) is a finished run that listed nothing: it does not
    count. The object that holds the watermark back, and the run that holds that object, are
    shown by ``tasks/ingest_claims.watermark_holder``."""
    row = conn.execute(_WATERMARK).one()
    if row.listed is None:
        return None
    return row.listed if row.waiting is None else min(row.listed, row.waiting)
