"""API keys: created and revoked by `tallyflow api-keys`, checked on every API request.

A key is 32 random bytes (URL-safe text, prefixed ``tf_``); only its SHA-256 is stored, so the
key itself is shown once, when it is created. SHA-256 rather than a slow password hash: the key
has 256 bits of entropy (nothing to brute-force) and every request checks it.

``KeyCache`` keeps the answer for an active key in the API process for ``KEY_CACHE_SECONDS``
(docs/architecture.md §22): a request with a known key costs no database round trip, and a
revoked key stops working at most that long after ``tallyflow api-keys revoke``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

PREFIX = "tf_"
_SHOWN = 10  # characters of the key kept in clear, to tell keys apart in a listing


class ApiKeyError(ValueError):
    """A key operation that cannot be done (unknown key, name already taken)."""


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, name: str) -> tuple[str, ApiKey]:
    """A new key: the key itself (shown once) and its stored record."""
    if not name.strip():
        raise ApiKeyError("an API key needs a name (who or what uses it)")
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        taken = conn.execute(
            text("select 1 from api_keys where name = :n and revoked_at is null"), {"n": name}
        ).first()
        if taken:
            raise ApiKeyError(f"an active API key named {name!r} exists already")
        row = conn.execute(
            text(
                "insert into api_keys (name, prefix, key_hash) values (:n, :p, :h)"
                " returning id, name, prefix, created_at, revoked_at"
            ),
            {"n": name, "p": key[:_SHOWN], "h": hash_key(key)},
        ).one()
    return key, ApiKey(*row)


def list_keys(engine: Engine) -> list[ApiKey]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("select id, name, prefix, created_at, revoked_at from api_keys order by id")
        )
        return [ApiKey(*row) for row in rows]


def revoke_key(engine: Engine, name_or_prefix: str) -> ApiKey:
    """Revoke the active key with this name or key prefix (exactly one must match)."""
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "update api_keys set revoked_at = now()"
                " where revoked_at is null and (name = :k or prefix = :k)"
                " returning id, name, prefix, created_at, revoked_at"
            ),
            {"k": name_or_prefix},
        ).all()
        if len(rows) != 1:
            conn.rollback()
            if not rows:
                raise ApiKeyError(f"no active API key named {name_or_prefix!r} (or with that "
                                  "prefix)")
            raise ApiKeyError(f"{len(rows)} active keys match {name_or_prefix!r}; give its name")
    return ApiKey(*rows[0])


def key_name(engine: Engine, key: str) -> str | None:
    """The name of the active key, None for an unknown or revoked one: who made a request
    (the actor a void records, tallyflow/api/routers/voids.py)."""
    with engine.connect() as conn:
        name: str | None = conn.execute(
            text("select name from api_keys where key_hash = :h and revoked_at is null"),
            {"h": hash_key(key)},
        ).scalar()
    return name


KEY_CACHE_SECONDS = 5.0  # a revoked key works at most this long in a running API process
KEY_CACHE_SIZE = 1024  # active keys remembered at once (least recently checked go first)


class KeyCache:
    """Active keys' names by key hash, each for at most ``ttl`` seconds after it was read
    from ``api_keys``. Only active keys are kept: an unknown or revoked key is looked up
    every time (so a key created a moment ago works at once). ``ttl`` 0 turns it off."""

    def __init__(self, ttl: float = KEY_CACHE_SECONDS, size: int = KEY_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()  # hash -> (name, at)
        self._lock = threading.Lock()
        self.hits = 0
        self.lookups = 0

    def get(self, key: str) -> str | None:
        """The key's name when it was active less than ``ttl`` seconds ago, else None (look
        it up with ``key_name`` and ``put`` the answer)."""
        digest = hash_key(key)
        with self._lock:
            cached = self._names.get(digest)
            if cached is None or self.clock() - cached[1] >= self.ttl:
                return None
            self._names.move_to_end(digest)
            self.hits += 1
            return cached[0]

    def put(self, key: str, name: str | None) -> None:
        digest = hash_key(key)
        with self._lock:
            self.lookups += 1
            if name is None or self.ttl <= 0:
                self._names.pop(digest, None)
                return
            self._names[digest] = (name, self.clock())
            self._names.move_to_end(digest)
            while len(self._names) > self.size:
                self._names.popitem(last=False)
