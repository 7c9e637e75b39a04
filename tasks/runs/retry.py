"""One decision for every task: is this failure worth another try?

Transient: the connection dropped, the server restarted, a serialization failure or deadlock.
Everything else (bad data, a bug, a validation error) fails fast, because retrying it only delays
the same failure and hides it from the run history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc

_TRANSIENT_PG = (
    psycopg.OperationalError,
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.AdminShutdown,
    pg_errors.CrashShutdown,
    pg_errors.CannotConnectNow,
    pg_errors.LockNotAvailable,
)


def is_transient(exc: BaseException | None) -> bool:
    from tallyflow.errors import UserError

    if isinstance(exc, UserError):  # a missing bucket or bad credentials stay so on retry
        return False
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.OperationalError | sa_exc.DisconnectionError):
            return True
        if isinstance(exc, _TRANSIENT_PG):
            return True
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


if TYPE_CHECKING:
    from prefect.cache_policies import CachePolicy


class RetryOptions(TypedDict):
    """``@task`` keywords (Prefect's, not a JSON shape)."""

    retries: int
    retry_delay_seconds: Callable[[int], list[float]]
    retry_jitter_factor: float
    retry_condition_fn: Callable[[Any, Any, Any], bool]
    cache_policy: CachePolicy


def transient_retries(retries: int = 4, backoff_factor: float = 1.0) -> RetryOptions:
    """The task options every database-writing task uses: retry transient failures only, with
    exponential backoff and jitter, and never cache (idempotency lives in Postgres)."""
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import exponential_backoff

    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff_factor),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_transient,
        "cache_policy": NO_CACHE,
    }


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient database/network failures."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
