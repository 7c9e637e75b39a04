"""The hourly cycle's partition maintenance: the months of ``usage_snapshots`` exist before
their first snapshot (the rule and the SQL: ``tallyflow.infra.partitions``; why: docs/scaling.md
§2)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from sqlalchemy import Engine

from tallyflow.infra.partitions import ensure_partitions
from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.runs import transient_retries


def ensure_snapshot_partitions(engine: Engine, as_of: datetime) -> list[str]:
    """Partitions for the run's hour and for now (a backfill's old month as well as the
    current one), each with the month after it; returns the names created."""
    with engine.begin() as conn:
        return ensure_partitions(conn, [as_of, datetime.now(UTC)])


@task(name="ensure-partitions", **transient_retries(retries=3, backoff_factor=1))
def ensure_partitions_task(as_of: datetime) -> list[str]:
    return ensure_snapshot_partitions(billing_engine(), as_of)
