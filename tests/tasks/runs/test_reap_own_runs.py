"""A run is never recorded crashed by its own process (the CI failure of 2026-12-07: a slow
Prefect API held up the heartbeat thread for a minute, and the billing run's health check then
reaped the billing run itself, which went on to complete)."""

from __future__ import annotations

import socket
import threading
import uuid

from sqlalchemy import Engine, text

from tallyflow.tasks.runs import reap_stale
from tallyflow.tasks.runs.history import (
    _attach,
    _cancel_requested,
    _detach,
    prefect_endings,
    start,
)


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


class _Mute:
    """An API that accepts connections and reads requests but never answers: a stalled Prefect
    server as the liveness checks see it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.requests += data.count(b"GET /")

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_a_stalled_prefect_api_is_asked_once_not_retried_for_a_minute() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    mute = _Mute()
    try:
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{mute.port}/api"}):
            assert prefect_endings([str(uuid.uuid4())]) == {}
            assert _cancel_requested([str(uuid.uuid4())]) is False
    finally:
        mute.close()
    assert mute.requests == 2  # one read each; Prefect's client alone would retry each 5 times
