"""Backpressure of ``POST /events`` and ``/events/batch``: a bounded intake and per-key rates.

A client that is not answered within its timeout retries, and every retry adds to the queue
that made it wait: under overload, answering late is worse than answering "not now". So the
API refuses early, in Lago's error shape with status 429 and a ``Retry-After`` header (the
SDKs retry on 429 after it), instead of letting requests queue until they time out:

- **Bounded intake.** ``Intake`` counts the events accepted and not yet loaded (waiting for
  the group commit, being written, written and queued for the loader). A request whose events
  would pass ``TALLYFLOW_API_MAX_PENDING`` is refused whole; nothing of it is stored, so its
  retry is the first and only copy (and a retry of a stored one is a counted duplicate).
- **Per-key rate.** ``RateLimiter`` is a token bucket per API key name, in events per second
  (``TALLYFLOW_API_RATE_LIMIT``); it holds one second's worth, never less than one batch.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from tallyflow.api.lago import LagoError, LagoJSON
from tallyflow.api.settings import MAX_BATCH


class TooManyRequests(LagoError):
    """429 in Lago's error shape, with ``Retry-After`` in whole seconds (RFC 9110 §10.2.3)."""

    def __init__(self, retry_after: float, details: dict[str, Any]) -> None:
        super().__init__(429, "too_many_requests", details, error="Too Many Requests")
        self.retry_after = max(1, math.ceil(retry_after))

    def response(self) -> LagoJSON:
        return LagoJSON(self.body(), status_code=429,
                        headers={"Retry-After": str(self.retry_after)})


class Intake:
    """Events accepted and not yet loaded, bounded. Taken on the event loop, given back from
    the loader's thread: a lock keeps the count exact."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.pending = 0
        self.refused = 0
        self.inflight = 0  # event requests in the process now (InflightLimit counts them)
        self.refused_inflight = 0
        self._lock = threading.Lock()

    def take(self, events: int) -> None:
        """Count ``events`` in, or refuse them all (429) when they would pass the bound. A
        request larger than the bound itself is let in alone, when nothing else waits."""
        with self._lock:
            if self.pending and self.pending + events > self.limit:
                self.refused += 1
                raise TooManyRequests(self.retry_after, {"events": ["intake_full"]})
            self.pending += events

    def give_back(self, events: int) -> None:
        with self._lock:
            self.pending = max(0, self.pending - events)


class RateLimiter:
    """A token bucket per API key: ``rate`` events a second, ``burst`` at most at once."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(rate, float(MAX_BATCH))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.refused = 0

    def take(self, key: str, events: int) -> None:
        """Spend ``events`` tokens of ``key``'s bucket, or refuse (429) with the wait until
        the bucket holds them."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < events:
            self._buckets[key] = (tokens, now)
            self.refused += 1
            wait = (min(events, self.burst) - tokens) / self.rate
            raise TooManyRequests(wait, {"api_key": ["rate_limit_exceeded"]})
        self._buckets[key] = (tokens - events, now)


EVENT_PATHS = ("/api/v1/events", "/api/v1/events/batch")


class InflightLimit:
    """ASGI middleware: at most ``limit`` event requests in the process at once; past it, 429
    at once, before the body is read or the key checked.

    On a CPU-bound machine the queue that makes clients time out forms in front of the
    route (the accept backlog, the thread pool that checks keys), where ``Intake`` cannot see
    it: this bound keeps the work admitted small enough to answer quickly, and turns the rest
    into cheap refusals the clients retry after ``Retry-After``.
    """

    def __init__(self, app: Any, limit: int, counts: Intake) -> None:
        self.app = app
        self.limit = limit
        self.counts = counts  # the pipeline's intake: its status shows these figures

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or scope["path"] not in EVENT_PATHS:
            await self.app(scope, receive, send)
            return
        counts = self.counts
        if counts.inflight >= self.limit:
            counts.refused_inflight += 1
            refused = TooManyRequests(1, {"events": ["too_many_requests_in_flight"]})
            await refused.response()(scope, receive, send)
            return
        counts.inflight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            counts.inflight -= 1
