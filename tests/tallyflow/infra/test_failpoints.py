"""The one fault-injection mechanism: armed points (kill, raise, pause) and in-process hooks."""

from __future__ import annotations

import threading

import pytest

from tallyflow.infra import failpoints
from tallyflow.infra.failpoints import FailpointHit, failpoint


def test_unarmed_points_do_nothing() -> None:
    failpoints.arm(None)
    failpoint("anything", object())


def test_an_armed_point_raises_on_its_nth_pass() -> None:
    failpoints.arm("demo.point=2:raise")
    try:
        failpoint("demo.point")
        failpoint("other.point")
        with pytest.raises(FailpointHit, match="demo.point"):
            failpoint("demo.point")
        failpoint("demo.point")  # only the nth pass
    finally:
        failpoints.arm(None)


def test_a_hook_sees_the_context_only_inside_its_block() -> None:
    seen: list[object] = []
    with failpoints.hooked("demo.hook", seen.append):
        failpoint("demo.hook", "conn-1")
        failpoint("demo.other", "conn-2")
        with failpoints.hooked("demo.hook", lambda ctx: seen.append(("second", ctx))):
            failpoint("demo.hook", "conn-3")
    failpoint("demo.hook", "conn-4")
    assert seen == ["conn-1", "conn-3", ("second", "conn-3")]


def test_a_hook_that_raises_stops_the_code_there() -> None:
    def boom(_: object) -> None:
        raise RuntimeError("worker killed")

    with failpoints.hooked("demo.hook", boom), pytest.raises(RuntimeError):
        failpoint("demo.hook")


def test_pause_holds_the_thread_until_released() -> None:
    failpoints.arm("demo.pause=1:pause")
    passed = threading.Event()

    def worker() -> None:
        failpoint("demo.pause")
        passed.set()

    thread = threading.Thread(target=worker)
    try:
        thread.start()
        assert failpoints.wait_until_paused(10)
        assert not passed.is_set()
        failpoints.release()
        thread.join(10)
        assert passed.is_set()
    finally:
        failpoints.arm(None)
