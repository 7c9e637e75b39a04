"""Settings of `tallyflow api`, from the environment (the one channel the CLI, `tallyflow
serve` and tests share), with the defaults documented in docs/api.md."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tallyflow.errors import UserError
from tallyflow.infra.settings import api_bucket

COMMIT_SECONDS_ENV = "TALLYFLOW_API_COMMIT_SECONDS"
COMMIT_EVENTS_ENV = "TALLYFLOW_API_COMMIT_EVENTS"
MAX_BODY_ENV = "TALLYFLOW_API_MAX_BODY_BYTES"
PREFIX = "api"  # the objects' prefix inside the bucket
MAX_BATCH = 100  # Lago's LAGO_EVENTS_BATCH_MAX_LENGTH default


@dataclass(frozen=True)
class ApiSettings:
    bucket: str  # any fsspec URL; objects go under <bucket>/api/YYYY/MM/DD/HH/
    commit_seconds: float  # at most one object per this many seconds (group commit)
    commit_events: int  # ... unless this many events wait: then at once
    max_body_bytes: int

    @property
    def source_url(self) -> str:
        """The ingest source that reads the API's objects: the same ledger key whether the
        API's loader or the scheduled ``ingest-events/api`` deployment loads an object."""
        return f"{self.bucket.rstrip('/')}/{PREFIX}"


def _number(name: str, default: float, kind: type[float] | type[int]) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a number", "unset it or give a number"
                             f" (default {default})") from None
    if value <= 0:
        raise UserError(f"{name}={raw!r} must be positive", f"default {default}")
    return value


def api_settings() -> ApiSettings:
    return ApiSettings(
        bucket=api_bucket(),
        commit_seconds=float(_number(COMMIT_SECONDS_ENV, 0.2, float)),
        commit_events=int(_number(COMMIT_EVENTS_ENV, 5000, int)),
        max_body_bytes=int(_number(MAX_BODY_ENV, 4 * 1024 * 1024, int)),
    )
