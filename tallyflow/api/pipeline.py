"""Events from HTTP to Postgres: group commit into object storage, then the ingest's own load.

1. **Reserved, then durable.** Before an object is written, its URL is reserved in the database
   (``tasks.ingest.api_writes``): from then until it is ingested it holds the ingest watermark
   back, even if the process dies before anything registers it (docs/architecture.md §23).
   A request is answered only once its events are in an object under
   ``<bucket>/api/YYYY/MM/DD/HH/`` (a local file is fsynced and renamed into place; a remote
   store's single PUT is atomic). Requests that arrive together share one object (group
   commit): at most one object per ``commit_seconds``, sooner when ``commit_events`` wait.
2. **Loaded by the ingest, exactly once.** The loader (a thread of the API process) registers
   each new object in the ingest ledger under the source ``<bucket>/api`` with the identity a
   listing gives it (``FsspecSource.ref``), then loads it with ``tasks.ingest.ingest_object``:
   claim with SKIP LOCKED, one transaction per object, events deduplicated. The scheduled
   ``ingest-events/api`` deployment lists the same source, so whatever crashes (the API after
   its answer, the loader mid-load, the database), an object is loaded once: by whichever
   commits first; the other finds it ingested (docs/architecture.md §3, invariant 2).
3. **Kept.** At start and every ``KEEP_SECONDS`` the loader sweeps the reservations: it
   registers and loads every reserved object that exists and is not ingested (what a crashed
   process wrote: the restart picks it up), forgets those never written, and advances the
   API's mark, the listing time the ingest watermark takes from `tallyflow api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.intake import Intake, RateLimiter
from tallyflow.api.settings import ApiSettings
from tallyflow.infra.failpoints import failpoint
from tallyflow.tasks.ingest import (
    FsspecSource,
    ObjectRef,
    SourceSpec,
    api_writes,
    build_source,
    ingest_object,
    register_objects,
)

_log = logging.getLogger(__name__)

# How often the loader sweeps the reservations and advances the API's mark (seconds): the
# ingest watermark lags a quiet API by this much at most.
KEEP_SECONDS = 5.0


def api_source(source_url: str) -> FsspecSource:
    """The ingest source of the API's objects: Lago events, JSON Lines, by the plain URL (the
    ledger key the scheduled deployment uses for the same URL)."""
    source = build_source(SourceSpec(url=source_url))
    assert isinstance(source, FsspecSource)
    return source


class ObjectWriter:
    """Writes one object of JSON Lines durably; names sort by time within the hour prefix."""

    def __init__(self, source: FsspecSource,
                 reserve: Callable[[str], None] | None = None,
                 forget: Callable[[str], None] | None = None) -> None:
        self.source = source
        # called with the object's URL before it is written, and if the write fails
        # (``api_writes.reserve`` / ``forget``: the watermark covers it meanwhile)
        self.reserve = reserve
        self.forget = forget
        self.fs, root = source._fs()
        self.root = root.rstrip("/")
        self.local = "file" in self.fs.protocol or "local" in self.fs.protocol
        # Several API processes may write one bucket: host, pid and a random tag keep names apart.
        self.tag = f"{socket.gethostname()[:20]}-{os.getpid()}-{secrets.token_hex(3)}"
        self._seq = count()

    def write(self, data: bytes, now: datetime) -> ObjectRef:
        now = now.astimezone(UTC)
        name = f"{now:%Y/%m/%d/%H}/{now:%Y%m%dT%H%M%S%fZ}-{self.tag}-{next(self._seq):06d}.jsonl"
        path = f"{self.root}/{name}"
        url = self.fs.unstrip_protocol(path)
        if self.reserve is not None:
            self.reserve(url)
        failpoint("api.after_reserve")
        try:
            if self.local:
                _write_local(path, data)
            else:
                self.fs.pipe_file(path, data)
        except BaseException:
            if self.forget is not None:  # nothing stored, nothing answered: not waited for
                with contextlib.suppress(Exception):
                    self.forget(url)
            raise
        failpoint("api.after_write")
        return self.source.ref(url)


def _write_local(path: str, data: bytes) -> None:
    """Write, fsync, rename into place, fsync the folder: the object exists whole or not at
    all, and survives a power cut once this returns. The temporary name has no event
    extension, so a concurrent listing leaves it alone."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.part"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class _Waiting:
    lines: list[bytes]
    future: asyncio.Future[ObjectRef]


class GroupCommit:
    """Requests hand in their lines and wait; one writer turns whatever waits into one object.

    Frequency is bounded (one object per ``interval`` at most, unless ``max_events`` wait),
    latency is low when idle (a lone request after a quiet spell is written at once).
    """

    def __init__(self, writer: Callable[[bytes, datetime], ObjectRef], interval: float,
                 max_events: int, on_written: Callable[[ObjectRef], None],
                 on_settled: Callable[[ObjectRef | None, int], None] | None = None) -> None:
        self.writer = writer
        self.interval = interval
        self.max_events = max_events
        self.on_written = on_written
        # told how many events each write settled (its object, or None when it failed): the
        # bounded intake counts them out (tallyflow.api.intake)
        self.on_settled = on_settled
        self._waiting: list[_Waiting] = []
        self._events = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._last = 0.0
        self.objects = 0

    async def submit(self, lines: list[bytes]) -> ObjectRef:
        future: asyncio.Future[ObjectRef] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(lines, future))
        self._events += len(lines)
        self._wake.set()
        if self._events >= self.max_events:
            self._full.set()
        # shield: a client that hangs up does not take the write away from the others
        return await asyncio.shield(future)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            delay = self._last + self.interval - time.monotonic()
            if delay > 0 and not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), delay)
                except TimeoutError:
                    pass
            await self.flush()

    async def flush(self) -> None:
        batch, self._waiting, self._events = self._waiting, [], 0
        self._wake.clear()
        self._full.clear()
        if not batch:
            return
        data = b"".join(line for item in batch for line in item.lines)
        try:
            ref = await asyncio.to_thread(self.writer, data, datetime.now(UTC))
        except Exception as exc:  # every waiting request learns it was not stored
            _log.exception("writing an API object failed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            if self.on_settled is not None:
                self.on_settled(None, sum(len(item.lines) for item in batch))
            return
        finally:
            self._last = time.monotonic()
        self.objects += 1
        for item in batch:
            if not item.future.done():
                item.future.set_result(ref)
        self.on_written(ref)
        if self.on_settled is not None:
            self.on_settled(ref, sum(len(item.lines) for item in batch))


@dataclass
class LoaderStats:
    objects: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    failed: int = 0
    last_error: str | None = None
    loaded: list[str] = field(default_factory=list)  # urls, most recent last (bounded)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "loaded"}


class Loader:
    """A thread that registers and loads each object the API wrote, oldest first."""

    def __init__(self, engine: Engine, source: FsspecSource,
                 on_loaded: Callable[[int], None] | None = None,
                 keep_seconds: float = KEEP_SECONDS, mark: bool = True) -> None:
        self.engine = engine
        self.mark = mark  # advance the API's mark (tests that set the watermark: False)
        self.source = source
        self.keep_seconds = keep_seconds
        self._kept = -float("inf")  # monotonic time of the last sweep
        self.stats = LoaderStats()
        self.on_loaded = on_loaded  # told how many events each load settled (the intake)
        self._queue: queue.SimpleQueue[tuple[ObjectRef, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tallyflow-api-loader",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self, ref: ObjectRef, events: int = 0) -> None:
        self._queue.put((ref, events))

    def stop(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            refs: list[ObjectRef] = []
            events = 0
            if time.monotonic() - self._kept >= self.keep_seconds:
                self._keep()
            try:
                item = self._queue.get(timeout=self.keep_seconds)
            except queue.Empty:
                continue
            while True:
                if item is None:
                    stopping = True
                else:
                    refs.append(item[0])
                    events += item[1]
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if refs:
                self._load(refs)
            # loaded, or left to the scheduled ingest after the attempts: out of the intake
            if events and self.on_loaded is not None:
                self.on_loaded(events)

    def _load(self, refs: list[ObjectRef], attempts: int = 5) -> None:
        for attempt in range(attempts):
            try:
                self.load(refs)
                return
            except Exception as exc:  # the scheduled ingest stays the safety net
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                _log.exception("loading API objects failed (attempt %d)", attempt + 1)
                time.sleep(min(2.0**attempt * 0.2, 5.0))

    def _keep(self) -> None:
        self._kept = time.monotonic()
        try:
            self.keep()
        except Exception as exc:  # the next sweep tries again; the reservations still hold
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            _log.exception("sweeping the API's reserved objects failed")

    def keep(self) -> None:
        """Load every reserved object that exists and is not ingested (one a crashed process
        wrote included), forget the stale reservations of objects never written, drop those
        of ingested objects, then advance the API's mark."""
        found: list[ObjectRef] = []
        never: list[str] = []
        for write in api_writes.open_writes(self.engine, self.source.key):
            try:
                found.append(self.source.ref(write.path))
            except FileNotFoundError:
                if write.stale:
                    never.append(write.path)
        if found:
            self._load(found)
        api_writes.forget(self.engine, never)
        api_writes.drop_ingested(self.engine)
        if self.mark:
            api_writes.mark(self.engine)

    def load(self, refs: list[ObjectRef]) -> None:
        """Register ``refs`` and load every object of the source still pending (so one left
        pending by a crash is picked up too); another loader holding one skips it."""
        failpoint("api.before_load")
        for object_id in register_objects(self.engine, self.source, refs):
            result = ingest_object(self.engine, self.source, object_id)
            if result.status == "skipped":
                continue
            stats = self.stats
            stats.objects += result.status == "ingested"
            stats.failed += result.status == "failed"
            stats.accepted += result.accepted
            stats.duplicates += result.duplicates
            stats.conflicts += result.conflicts
            stats.rejected += result.rejected
            stats.loaded = [*stats.loaded[-99:], result.url]


class Pipeline:
    """The group commit, its writer and the loader, started and stopped with the app."""

    def __init__(self, engine: Engine, settings: ApiSettings, load: bool = True,
                 mark: bool = True) -> None:
        self.settings = settings
        self.source = api_source(settings.source_url)
        key = self.source.key
        self.writer = ObjectWriter(
            self.source, reserve=lambda url: api_writes.reserve(engine, key, url),
            forget=lambda url: api_writes.forget(engine, [url]))
        self.intake = Intake(settings.max_pending)
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self.loader = (Loader(engine, self.source, on_loaded=self.intake.give_back, mark=mark)
                       if load else None)
        self.commit = GroupCommit(self.writer.write, settings.commit_seconds,
                                  settings.commit_events, self._written, self._settled)
        self.received = 0
        self.answered_fast = 0  # event requests answered by the fast path (routers/events.py)

    def _written(self, ref: ObjectRef) -> None:
        """Kept for GroupCommit's callers that want each object; the loader is told in
        ``_settled``, with the object's event count."""

    def _settled(self, ref: ObjectRef | None, events: int) -> None:
        if ref is not None and self.loader is not None:
            self.loader.notify(ref, events)
        else:  # failed (nothing stored), or written with nobody here to load it
            self.intake.give_back(events)

    async def submit(self, key: str, lines: list[bytes]) -> ObjectRef:
        """Admit ``lines`` (429 past the key's rate or the intake's bound, nothing stored),
        then store them durably. The intake counts them until they are loaded."""
        if self.limiter is not None:
            self.limiter.take(key, len(lines))
        self.intake.take(len(lines))
        # from here the group commit settles them: a failed write gives them back in
        # ``GroupCommit.flush``; a waiter that hangs up is still written (shielded)
        ref = await self.commit.submit(lines)
        self.received += len(lines)
        return ref

    def start(self) -> None:
        if self.loader is not None:
            self.loader.start()

    async def stop(self, committer: asyncio.Task[None]) -> None:
        """Stop the committer, answer whoever still waits, then let the loader finish."""
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self.commit.flush()
        if self.loader is not None:
            await run_in_threadpool(self.loader.stop)

    def status(self) -> dict[str, Any]:
        """What this process received, wrote and loaded."""
        loader = self.loader.stats.as_dict() if self.loader is not None else None
        return {"events_received": self.received, "objects_written": self.commit.objects,
                "answered_fast": self.answered_fast, "worker": os.getpid(),
                "source": self.settings.source_url, "loader": loader,
                "intake": {"pending": self.intake.pending, "max_pending": self.intake.limit,
                           "refused": self.intake.refused,
                           "inflight": self.intake.inflight,
                           "refused_inflight": self.intake.refused_inflight,
                           "rate_limited": self.limiter.refused if self.limiter else 0}}
