"""What one derivation saves (docs/architecture.md §21): ``wallet_overview`` with a fresh
running figure against the same read rating the period live (the refresh not running), on a
subscription with 5,002 events not folded. Prints the median and max of 21 reads each (ms);
asserts only that both answer the same usage. Slow: ``pytest -s -m slow`` this file."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tallyflow.tasks import wallets as w
from tests.tasks.rating_fixtures import load_rows
from tests.tasks.wallets.test_balance import FEB, _event, _seeded
from tests.tasks.wallets.test_one_balance_path import _wallet


@pytest.mark.slow
def test_timing(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)
    load_rows(engine, [_event(10 + n, "2025-02-10T00:00:00+00:00", n) for n in range(5000)])
    w.refresh_running_usage(engine, FEB)
    _wallet(engine, 100000)
    out = {}
    amounts = set()
    reads = (("running_usage", FEB + timedelta(seconds=1)), ("live", FEB + timedelta(minutes=10)))
    for label, at in reads:
        times = []
        for _ in range(21):
            start = time.perf_counter()
            view = w.wallet_overview(engine, "c", at, max_age_seconds=120)
            times.append((time.perf_counter() - start) * 1000)
        out[label] = (statistics.median(times), max(times))
        amounts.add(view["ongoing_usage"]["amount_cents"])
    assert len(amounts) == 1
    print("\nTIMING", {k: (round(a, 1), round(b, 1)) for k, (a, b) in out.items()})
