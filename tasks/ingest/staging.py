"""Turning decoded records into COPY-ready chunks, off the loading thread.

Split from ``tasks/ingest/load.py`` along its seam: that module owns the transaction (claim, COPY,
merge, ledger); this one owns the per-row Python work (map, validate, format COPY text) and the
reader thread that does it for the next chunk while PostgreSQL loads the current one. Every
name here is pure CPU work on one object's rows; nothing here talks to the database.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.events import MAX_RAW_KEPT, Rejection, TimeBounds, ValidEvent, validate_record
from tallyflow.models.mappings import MISSING, DeclarativeMapping, Events, lookup
from tallyflow.tasks.ingest.sources import Source

_gc_lock = threading.Lock()
_gc_loaders = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run Python's cycle collector rarely while objects load.

    Reading allocates a dict per row, freed by reference counting; with the default thresholds
    the cycle collector still walks the young heap every 700 allocations and the whole heap
    often, a large share of the reader's time (docs/scaling.md §6). Loading creates no cycles worth
    collecting sooner; the thresholds come back when the last concurrent load ends.
    """
    global _gc_loaders, _gc_saved
    with _gc_lock:
        if _gc_loaders == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(100_000, 50, 100)
        _gc_loaders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_loaders -= 1
            if _gc_loaders == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


class StagingTurns:
    """One object at a time reads and stages in this process, the earliest in its run first.

    Parsing holds the GIL, so two objects staging at once in one process each go at half speed
    and the first merge -- the run's critical path, since objects merge one after another --
    starts only when both are done. In turn, the first object is staged in half the time and
    merges while the next one parses (docs/scaling.md section 1). Only a throughput rule: order
    and exactly once rest on the database (tasks/ingest/load.py), so a turn not given within
    ``patience`` seconds is taken anyway (an object whose source hangs cannot hold up others).
    """

    def __init__(self, patience: float = 30.0) -> None:
        self._patience = patience
        self._ready = threading.Condition()
        self._waiting: list[int] = []
        self._busy = False

    @contextmanager
    def turn(self, rank: int) -> Iterator[None]:
        """Stage once no object is staging and none of a lower ``rank`` (its place in its
        run's load order) is waiting."""
        deadline = time.monotonic() + self._patience
        with self._ready:
            self._waiting.append(rank)
            try:
                while self._busy or rank > min(self._waiting):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
            finally:
                self._waiting.remove(rank)
                self._ready.notify_all()
            held = not self._busy
            self._busy = self._busy or held
        try:
            yield
        finally:
            with self._ready:
                if held:
                    self._busy = False
                self._ready.notify_all()


STAGING = StagingTurns()


# (row_number, rejection, raw) -- or with a sub-index last, for one derived event of a record
RejectedRow = tuple[int, Rejection, str] | tuple[int, Rejection, str, int]
# COPY text format: backslash, tab, newline and carriage return are the characters to escape.
_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """Escape for COPY's text format, skipping the rewrite for the usual clean value.

    Tab, newline and carriage return are not printable, so one C-level scan rules all four
    special characters out (with the check for a backslash).
    """
    if "\\" in value or not value.isprintable():
        return value.translate(_COPY_ESCAPES)
    return value


@dataclass(frozen=True, slots=True)
class Staged:
    """A chunk of valid events already in COPY text format, ready to send in one write.

    ``rows`` counts events; ``records`` and ``empty`` count the records read, so every record
    is accounted for (docs/data-quality.md, "Every record accounted for"): a record is emitted
    (one or more events), rejected (the chunk's rejected rows) or empty (``no_usage``: a
    mapping gave it no event, nothing is stored). Emitted = records - rejected - empty.
    """

    rows: int
    data: bytes
    records: int = 0
    empty: int = 0
    # usage fields the mapping does not know, with how many records carried each
    unmapped: dict[str, int] = field(default_factory=dict)
    # the mapping's paths no record of the object has matched so far (None: not tracked)
    unmatched: frozenset[str] | None = None


def validated(
    chunks: Iterator[list[tuple[int, Any, Any]]], source: Source, bounds: TimeBounds
) -> Iterator[tuple[Staged, list[RejectedRow]]]:
    """Validate and format COPY text in the reader thread.

    All per-row Python work happens here, so the loading thread only sends one buffer and runs
    one statement per chunk; otherwise the two threads fight over the GIL on every row.
    """
    mapping = source.mapping
    unmatched = (set(mapping.paths(source.mapping_options))
                 if isinstance(mapping, DeclarativeMapping) else None)
    for chunk in chunks:
        failpoint("ingest.after_read_chunk")
        unmapped: dict[str, int] = {}
        lines, rejected, empty = stage_rows(chunk, source, bounds, unmapped)
        if unmatched:
            _matched(chunk, unmatched)
        yield Staged(len(lines), "".join(lines).encode(), len(chunk), empty, unmapped,
                     None if unmatched is None else frozenset(unmatched)), rejected


def _matched(chunk: Sequence[tuple[int, Any, Any]], unmatched: set[str]) -> None:
    """Strike the paths a record of the chunk matches: what is left after the whole object
    never matched (a typo, or a provider that renamed a field), reported in the run summary.
    Each path is looked up until it first matches, so this costs a few records' lookups."""
    for _, record, _ in chunk:
        if not unmatched:
            return
        if type(record) is dict:
            for path in [p for p in unmatched if lookup(record, p) is not MISSING]:
                unmatched.discard(path)


def stage_rows(
    chunk: Sequence[tuple[int, Any, Any]], source: Source, bounds: TimeBounds,
    unmapped: dict[str, int] | None = None,
) -> tuple[list[str], list[RejectedRow], int]:
    """Decoded records -> their events as COPY text lines, the rejected rows, and how many
    records gave no event at all (``no_usage``: counted, never stored, so a mapping path that
    matches nothing shows as a count instead of vanishing). ``unmapped`` counts the usage
    fields a mapping did not know, per name (docs/llm-usage.md)."""
    lines: list[str] = []
    rejected: list[RejectedRow] = []
    empty = 0
    for row_number, record, raw in chunk:
        if isinstance(record, Rejection):
            rejected.append((row_number, record, raw_text(record, raw)))
            continue
        mapped = source.map_record(record)
        checked_all: Sequence[ValidEvent] | Rejection
        if type(mapped) is Events:
            if mapped.unmapped and unmapped is not None:
                for name in mapped.unmapped:
                    unmapped[name] = unmapped.get(name, 0) + 1
            checked_all = _validated_many(mapped, bounds)
        elif isinstance(mapped, Rejection):
            checked_all = mapped
        else:
            single = validate_record(mapped, bounds)
            checked_all = single if isinstance(single, Rejection) else (single,)
        if isinstance(checked_all, Rejection):
            # the record's own row number and original text, whatever the mapping made
            rejected.append((row_number, checked_all, raw_text(record, raw)))
            continue
        if not checked_all:
            empty += 1
            continue
        for sub_index, checked in enumerate(checked_all):
            txn, sub, code, timestamp, properties, precise = checked
            # validate_record hands back the bounds' own write time when none was given
            given = "f" if timestamp is bounds.written_at else "t"
            # One C-level scan of the four text fields together: the usual row has nothing
            # to escape and skips four function calls (see _copy_text).
            clean = txn + sub + code + properties
            if "\\" in clean or not clean.isprintable():
                txn, sub = _copy_text(txn), _copy_text(sub)
                code, properties = _copy_text(code), _copy_text(properties)
            lines.append(
                f"{row_number}\t{sub_index}\t{txn}\t{sub}\t{code}\t"
                f"{timestamp.isoformat()}\t{properties}\t"
                f"{_COPY_NULL if precise is None else precise}\t{given}\n"
            )
    return lines, rejected, empty


def _validated_many(events: Events, bounds: TimeBounds) -> list[ValidEvent] | Rejection:
    """All of a record's events, or the record is rejected whole (naming the event): half a
    record billed would be worse than none, and the reject is fixed and replayed as one."""
    checked: list[ValidEvent] = []
    for index, event in enumerate(events):
        valid = validate_record(event, bounds)
        if isinstance(valid, Rejection):
            properties = event.get("properties") if isinstance(event, dict) else None
            kind = properties.get("type") if isinstance(properties, dict) else None
            which = f"event {index + 1} of {len(events)}" + (f" ({kind})" if kind else "")
            return Rejection(valid.reason, valid.field, f"{which}: {valid.message}")
        checked.append(valid)
    return checked


def raw_text(record: Any, raw: bytes | str | None) -> str:
    """The row as it came, cut to a size worth keeping, never with NULs (Postgres text)."""
    if raw is None:
        try:
            raw = orjson.dumps(record, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            raw = repr(record)
    if isinstance(raw, bytes):
        raw = raw[: MAX_RAW_KEPT + 4].decode("utf-8", "replace")
    raw = raw.rstrip("\r\n")
    if len(raw) > MAX_RAW_KEPT:
        raw = raw[:MAX_RAW_KEPT] + "...[truncated]"
    return raw.replace("\x00", "\\u0000")


_DONE = object()
_T = TypeVar("_T")


def prefetch(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Read and validate the next chunk in a thread while Postgres loads this one.

    The queue is bounded, so at most ``depth`` chunks are in memory whatever the object's size.
    """
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                box.put(item)
            box.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            box.put(exc)

    worker = threading.Thread(target=produce, name="tallyflow-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                box.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def staged_event_json(row: Any) -> str:
    """A staged event kept out of the events (a conflicting copy, a request billed already) as
    a Lago event (JSON), so it can be read, fixed and replayed from the rejected rows."""
    event: dict[str, Any] = {
        "transaction_id": row.transaction_id,
        "external_subscription_id": row.external_subscription_id,
        "code": row.code,
        "properties": orjson.Fragment(row.properties),
    }
    if row.ts_given:
        event["timestamp"] = row.ts.isoformat()
    if row.precise is not None:
        event["precise_total_amount_cents"] = orjson.Fragment(format(row.precise, "f"))
    return orjson.dumps(event).decode()
