"""StagingTurns: one object stages at a time in a process, the earliest of its run first, and a
turn that never comes is taken after the patience runs out (a throughput rule, never a hang)."""

from __future__ import annotations

import threading
import time

import pytest

from tallyflow.tasks.ingest.staging import StagingTurns


def _stage(turns: StagingTurns, rank: int, log: list[tuple[str, int]], hold: float) -> None:
    with turns.turn(rank):
        log.append(("in", rank))
        time.sleep(hold)
        log.append(("out", rank))


@pytest.mark.parametrize("arrival", [[0, 1, 2, 3], [3, 1, 2, 0], [2, 3, 0, 1]])
def test_waiting_objects_stage_one_at_a_time_earliest_first(arrival: list[int]) -> None:
    turns = StagingTurns(patience=10.0)
    log: list[tuple[str, int]] = []
    blocker = threading.Event()

    def first() -> None:  # holds the turn until every other object is waiting
        with turns.turn(-1):
            blocker.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    time.sleep(0.05)
    threads = [threading.Thread(target=_stage, args=(turns, r, log, 0.01)) for r in arrival]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    blocker.set()
    for thread in [holder, *threads]:
        thread.join(5)
    assert log == [(side, r) for r in sorted(arrival) for side in ("in", "out")]


def test_a_turn_that_never_comes_is_taken_after_the_patience() -> None:
    turns = StagingTurns(patience=0.2)
    release = threading.Event()

    def stuck() -> None:  # an object whose source hangs keeps its turn
        with turns.turn(0):
            release.wait(5)

    holder = threading.Thread(target=stuck)
    holder.start()
    time.sleep(0.05)
    started = time.monotonic()
    with turns.turn(1):
        waited = time.monotonic() - started
    release.set()
    holder.join(5)
    assert 0.1 <= waited < 2
    # the stuck object's turn ends normally; the next one is given at once
    started = time.monotonic()
    with turns.turn(2):
        assert time.monotonic() - started < 0.1


def test_an_error_while_staging_gives_the_turn_on() -> None:
    turns = StagingTurns(patience=5.0)
    with pytest.raises(RuntimeError), turns.turn(0):
        raise RuntimeError("unreadable object")
    started = time.monotonic()
    with turns.turn(1):
        assert time.monotonic() - started < 0.1
