"""Delivering the outbox: claim due webhooks, POST them signed, log every attempt.

At least once, never blocking billing (docs/architecture.md §17):

- **Claim** in a short transaction: due rows (``pending``/``retrying`` whose
  ``next_attempt_at`` has come) with ``FOR UPDATE SKIP LOCKED``, so concurrent deliverers take
  different rows; the claim moves ``next_attempt_at`` a lease ahead and commits. No row lock
  is held during the POST, and billing only ever inserts new rows, so nothing a receiver does
  can hold a billing transaction.
- **POST** the stored body with Lago's headers (``models/webhooks.py``), through httpx with a
  short timeout. A process killed here leaves the row claimed until the lease ends; the next
  run sends it again with the same ``X-Lago-Unique-Key``, which receivers count once.
- **Record** in a second transaction, guarded by the attempt count read at the claim (a row
  whose lease ran out and was taken by another deliverer is recorded once): the attempt row,
  and the webhook ``succeeded`` (2xx), ``retrying`` at ``now + backoff(attempts)``, or
  ``failed`` (dead) after the last attempt, as Lago's ``Webhooks::SendHttpService``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.settings import get_settings
from tallyflow.models.lago.summaries import WebhookRunSummary
from tallyflow.models.webhooks import backoff, headers
from tallyflow.tasks.webhooks.outbox import signing

RESPONSE_KEPT = 2000  # characters of a receiver's answer kept in the attempt log
LEASE_MARGIN = timedelta(seconds=30)


class Poster(Protocol):
    """What sends one request: ``httpx.Client.post``'s shape (tests pass their own)."""

    def __call__(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any: ...


@dataclass
class Outcome:
    """One attempt: the receiver's status and answer, or why there was none."""

    http_status: int | None = None
    response: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


@dataclass
class DeliverySummary:
    """What one delivery run did."""

    claimed: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    lost_lease: int = 0
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> WebhookRunSummary:
        return {"claimed": self.claimed, "succeeded": self.succeeded,
                "retrying": self.retrying, "failed": self.failed,
                "lost_lease": self.lost_lease}


_CLAIM = text(
    """
    select w.id, w.lago_id, w.body, w.attempts, e.webhook_url
    from webhooks w join webhook_endpoints e on e.id = w.endpoint_id
    where w.status in ('pending', 'retrying') and w.next_attempt_at <= :now
      and e.removed_at is null
      and (cast(:only as text[]) is null or w.lago_id = any(cast(:only as text[])))
    order by w.next_attempt_at, w.id
    limit :n
    for update of w skip locked
    """
)

_RECORD = text(
    """
    update webhooks set attempts = attempts + 1, status = :status,
      next_attempt_at = :next, last_attempt_at = :started, http_status = :http,
      last_error = :error, delivered_at = case when :status = 'succeeded' then :finished end,
      updated_at = now()
    where id = :id and attempts = :seen and status in ('pending', 'retrying')
    """
)

_ATTEMPT = text(
    """
    insert into webhook_attempts (webhook_id, attempt, started_at, milliseconds, http_status,
      error, response)
    values (:id, :attempt, :started, :ms, :http, :error, :response)
    """
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def deliver_pending(
    engine: Engine, *, limit: int = 100, clock: Callable[[], datetime] = _utc_now,
    post: Poster | None = None, timeout: float | None = None, max_attempts: int | None = None,
    only: Sequence[str] | None = None,
) -> DeliverySummary:
    """Send every due webhook once (up to ``limit``), in batches; returns what happened.

    ``clock`` is the deliverer's time (due rows, the lease, the backoff): tests pass their own,
    so a retry "an hour later" needs no sleep. ``post`` sends one request (default: an httpx
    client with ``timeout`` seconds, ``TALLYFLOW_WEBHOOK_TIMEOUT_SECONDS``). ``only`` limits
    the run to these webhooks (a manual redelivery)."""
    settings = get_settings()
    timeout = timeout or settings.webhook_timeout_seconds
    max_attempts = max_attempts or settings.webhook_attempts
    summary = DeliverySummary()
    client = None
    if post is None:
        client = httpx.Client(timeout=timeout, follow_redirects=False)
        post = client.post
    try:
        while summary.claimed < limit:
            batch, key = _claim(engine, clock(), min(20, limit - summary.claimed),
                                timedelta(seconds=timeout) + LEASE_MARGIN, only)
            if not batch:
                break
            summary.claimed += len(batch)
            for row in batch:
                _attempt(engine, row, key, post, clock, max_attempts, summary)
    finally:
        if client is not None:
            client.close()
    return summary


def _claim(engine: Engine, now: datetime, n: int, lease: timedelta,
           only: Sequence[str] | None) -> tuple[list[Any], str]:
    with engine.begin() as conn:
        rows = list(conn.execute(_CLAIM, {"now": now, "n": n, "only": list(only)
                                          if only is not None else None}).all())
        if rows:
            conn.execute(text("update webhooks set next_attempt_at = :until"
                              " where id = any(cast(:ids as bigint[]))"),
                         {"until": now + lease, "ids": [r.id for r in rows]})
            key = signing(conn).hmac_key
        else:
            key = ""
    return rows, key


def _attempt(engine: Engine, row: Any, key: str, post: Poster,
             clock: Callable[[], datetime], max_attempts: int,
             summary: DeliverySummary) -> None:
    body = row.body.encode()
    started, began = clock(), time.monotonic()
    failpoint("webhooks.before_post", row)
    outcome = send(post, row.webhook_url, body, headers(key, body, row.lago_id))
    failpoint("webhooks.after_post", row)
    ms = int((time.monotonic() - began) * 1000)
    finished = clock()
    attempt = row.attempts + 1
    status = ("succeeded" if outcome.ok
              else "retrying" if attempt < max_attempts else "failed")
    with engine.begin() as conn:
        recorded = conn.execute(_RECORD, {
            "status": status, "next": finished + backoff(attempt), "started": started,
            "finished": finished, "http": outcome.http_status, "error": outcome.error,
            "id": row.id, "seen": row.attempts,
        }).rowcount
        if not recorded:  # the lease ran out and another deliverer recorded this attempt
            summary.lost_lease += 1
            return
        conn.execute(_ATTEMPT, {"id": row.id, "attempt": attempt, "started": started,
                                "ms": ms, "http": outcome.http_status, "error": outcome.error,
                                "response": outcome.response})
    setattr(summary, status, getattr(summary, status) + 1)
    summary.ids.append(row.lago_id)


def send(post: Poster, url: str, body: bytes, sent_headers: dict[str, str]) -> Outcome:
    """One POST; whatever goes wrong with the receiver (a refused connection, a timeout, a
    URL it cannot be reached at) is an outcome, never an exception: the attempt is logged and
    the next webhook is still sent."""
    try:
        response = post(url, content=body, headers=sent_headers)
    except Exception as exc:  # the receiver's failure is data, not a crash
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:RESPONSE_KEPT])
    text_ = response.text[:RESPONSE_KEPT] if response.text else None
    code = int(response.status_code)
    return Outcome(code, text_, None if 200 <= code < 300 else f"HTTP {code}")
