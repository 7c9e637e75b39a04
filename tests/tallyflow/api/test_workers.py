"""``tallyflow api --workers 2`` (docs/architecture.md §22): two server processes on one port,
each with its own group commit and loader; every event is stored exactly once, retried
copies included, whichever process answers it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tallyflow.api.server import run, worker_settings
from tallyflow.errors import UserError
from tests.tallyflow.api.conftest import LiveApi, settings_for, wait_for
from tests.tallyflow.api.test_events import event
from tests.tasks.rating_fixtures import apply_mistral


@pytest.mark.slow  # a live server of three processes: ~15-35 s on the shared machine
def test_two_workers_store_every_event_exactly_once(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    server = live_api("--workers", "2")
    headers = {"Authorization": f"Bearer {api_key}"}
    for n in range(20):
        batch = {"events": [event(f"w{n}-{i}") for i in range(10)]}
        for _ in range(2):  # each batch twice, on a new connection: a retry after a lost answer
            answer = httpx.post(
                f"{server.url}/api/v1/events/batch", json=batch, headers=headers, timeout=30
            )
            assert answer.status_code == 200
    # the supervisor and its two workers (and multiprocessing's helper) in its process group
    group = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and _group(pid) == server.process.pid
    ]
    assert len(group) >= 3
    assert wait_for(engine, "select count(*) from events", 200) == 200
    assert wait_for(engine, "select count(distinct transaction_id) from events", 200) == 200
    assert wait_for(engine, "select coalesce(sum(duplicates), 0) from ingest_objects", 200) == 200


def _group(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.parametrize("workers", [0, 17])
def test_a_worker_count_out_of_range_is_refused_before_anything_starts(workers: int) -> None:
    with pytest.raises(UserError, match=f"--workers {workers}: between 1 and 16"):
        run(workers=workers)


@pytest.mark.parametrize(
    ("rate", "workers", "share"),
    [(None, 2, None), (100.0, 1, 100.0), (100.0, 2, 50.0), (90.0, 4, 22.5)],
)
def test_each_worker_gets_its_share_of_the_per_key_rate(
    tmp_path: Path, rate: float | None, workers: int, share: float | None
) -> None:
    settings = settings_for(tmp_path, rate_limit=rate)
    assert worker_settings(settings, workers).rate_limit == share
