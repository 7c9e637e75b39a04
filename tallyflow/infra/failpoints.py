"""Named failure points, for the survival suite: crash the process exactly here.

Databases test crash safety this way (FoundationDB's and TiKV's failpoints): the code names the
places where a crash would hurt most, and a test arms one of them through the environment, e.g.
``TALLYFLOW_FAILPOINTS="ingest.after_merge=3"`` kills the process with SIGKILL the third time it
passes that point. For in-process trials, ``=3:raise`` raises ``FailpointHit`` instead, and
``=3:pause`` holds the thread there until ``release()`` (so a test can break the database or the
object store at exactly that moment, after ``wait_until_paused()``).
In-process tests that need to act *inside* a transaction at a named point (drop the
connection, raise after posting) register a hook with ``hooked(name, callback)``: the callback
receives what the code passes at that point (e.g. its ``Connection``). It is the one
fault-injection mechanism (docs/architecture.md §6).
Unarmed (production), a failpoint costs two checks. The armed points are read from the
settings (``TALLYFLOW_FAILPOINTS``, tallyflow/infra/settings.py) the first time the process
passes a point, not at import.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tallyflow.infra.settings import get_settings

ENV = "TALLYFLOW_FAILPOINTS"


class FailpointHit(RuntimeError):
    """Raised by an armed failpoint whose action is ``raise``."""


def _parse(spec: str | None) -> dict[str, tuple[int, str]]:
    armed: dict[str, tuple[int, str]] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, _, rest = item.strip().partition("=")
        count, _, action = (rest or "1").partition(":")
        armed[name] = (int(count or 1), action or "kill")
    return armed


_armed: dict[str, tuple[int, str]] | None = None  # None: not read yet (``_read_armed``)
_hits: dict[str, int] = {}
_lock = threading.Lock()
_paused = threading.Event()
_released = threading.Event()
PAUSE_LIMIT = 60.0  # a paused thread goes on by itself after this, so a broken test cannot hang


def arm(spec: str | None) -> None:
    """Re-read the armed points (tests that arm in-process)."""
    global _armed
    with _lock:
        _armed = _parse(spec)
        _hits.clear()
        _paused.clear()
        _released.clear()


def _read_armed() -> None:
    global _armed
    spec = get_settings().failpoints
    with _lock:
        if _armed is None:
            _armed = _parse(spec)


def wait_until_paused(timeout: float = 60.0) -> bool:
    return _paused.wait(timeout)


def release() -> None:
    _released.set()


_hooks: dict[str, list[Callable[[Any], None]]] = {}


@contextmanager
def hooked(name: str, callback: Callable[[Any], None]) -> Iterator[None]:
    """Call ``callback(context)`` each time the code passes ``name``, inside this block."""
    with _lock:
        _hooks.setdefault(name, []).append(callback)
    try:
        yield
    finally:
        with _lock:
            _hooks[name].remove(callback)
            if not _hooks[name]:
                del _hooks[name]


def failpoint(name: str, context: Any = None) -> None:
    if _armed is None:
        _read_armed()
    if not _armed and not _hooks:
        return
    for callback in list(_hooks.get(name, ())):
        callback(context)
    with _lock:
        armed = _armed or {}
        if name not in armed:
            return
        _hits[name] = _hits.get(name, 0) + 1
        count, action = armed[name]
        if _hits[name] != count:
            return
    if action == "raise":
        raise FailpointHit(name)
    if action == "pause":
        _paused.set()
        _released.wait(PAUSE_LIMIT)
        return
    os.kill(os.getpid(), signal.SIGKILL)
