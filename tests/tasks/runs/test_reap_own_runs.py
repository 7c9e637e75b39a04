"""A run is never recorded crashed by its own process (the CI failure of 2026-12-07: a slow
Prefect API held up the heartbeat thread for a minute, and the billing run's health check then
reaped the billing run itself, which went on to complete)."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

from tallyflow.tasks.runs import reap_stale
from tallyflow.tasks.runs.history import _attach, _detach, start


def _silent_runs(engine: Engine, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for run_id in ids:
        start(engine, run_id, "billing", "billing test", None)
    with engine.begin() as conn:  # their last beat a minute ago
        conn.execute(text("update run_history set heartbeat_at = now() - interval '60 seconds'"
                          " where flow_run_id = any(cast(:ids as text[]))"), {"ids": ids})
    return ids


def _status(engine: Engine, run_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("select status from run_history where flow_run_id = :id"),
                                {"id": run_id}).scalar_one())


def test_a_live_run_of_this_process_is_not_reaped_however_late_its_beat(engine: Engine) -> None:
    mine, theirs = _silent_runs(engine, 2)
    _attach(mine, engine)
    try:
        reaped = reap_stale(engine, stale=30)
    finally:
        _detach(mine)
    assert theirs in reaped and mine not in reaped
    assert _status(engine, mine) == "running"
    assert _status(engine, theirs) == "crashed"
    # once this process no longer runs it, its silence means what it means
    assert mine in reap_stale(engine, stale=30)
    assert _status(engine, mine) == "crashed"
