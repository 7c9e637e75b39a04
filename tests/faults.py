"""Break things at an exact moment: pause the loader at a failpoint, do the damage, go on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from tallyflow.infra import failpoints


def terminate_other_backends(engine: Engine) -> int:
    """pg_terminate_backend on every other connection to this database; how many died."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()) t"
        )).scalar_one())


def wait_for_open_transactions_to_end(engine: Engine, timeout: float = 30) -> None:
    """Poll until no other connection to this database holds a transaction open (Postgres
    rolls back a dead client's transaction once it notices the socket closed)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            open_transactions = conn.execute(text(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and xact_start is not null"
            )).scalar_one()
        if open_transactions == 0:
            return
        assert time.monotonic() < deadline, f"{open_transactions} transaction(s) still open"
        time.sleep(0.02)


@contextmanager
def damage_at(point: str, damage: Callable[[], object]) -> Iterator[list[object]]:
    """While the body runs: when a thread first reaches ``point``, hold it there, call
    ``damage`` (its result is appended to the yielded list), then let the thread go on."""
    done: list[object] = []

    def watch() -> None:
        if failpoints.wait_until_paused(60):
            done.append(damage())
        failpoints.release()

    failpoints.arm(f"{point}:pause")
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield done
    finally:
        failpoints.release()
        watcher.join(timeout=90)
        failpoints.arm(None)
