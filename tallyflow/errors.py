"""Errors people hit, said in one line with a hint, and how the CLI turns any error into one.

Anything raised as ``UserError`` is a problem with the input or the environment (a path, a
bucket, credentials, a database URL): it is never retried and never shown as a traceback.
Known library errors (database unreachable, bad URL) are translated here; anything else is a
bug and says so, with ``--debug`` for the traceback.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A problem the user can fix, with a hint saying how."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code  # 2 for a mistyped option, as for other usage errors

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:  # survives Prefect's result pickling
        return (type(self), (self.message, self.hint, self.exit_code))


class SourceError(UserError):
    """The source cannot be listed: bad URL, missing path or bucket, no access, unreachable."""


_DB_HINT = (
    "check TALLYFLOW_DATABASE_URL (postgresql://user:password@host:5432/db), or unset it to "
    "use the embedded database"
)

_UNREACHABLE_HINT = "is PostgreSQL running and reachable? " + _DB_HINT


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, UserError) else 1


def explain(exc: BaseException) -> tuple[str, str | None]:
    """(one-line message, hint) for an error that reached the command line."""
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            return current.message, current.hint
        if type(current).__name__ == "ResourceError":  # tallyflow.infra.resources: says what to do
            return str(current), None
        if isinstance(current, sa_exc.ArgumentError) and "URL" in str(current):
            return f"bad database URL: {_first_line(current)}", _DB_HINT
        if isinstance(current, ValueError) and "needs PostgreSQL" in str(current):
            return f"bad database URL: {current}", _DB_HINT
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            return f"cannot reach the database: {_first_line(current)}", _UNREACHABLE_HINT
        current = current.__cause__ or current.__context__
    try:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            return f"cannot reach the database: {_first_line(exc)}", _UNREACHABLE_HINT
    except ImportError:  # pragma: no cover
        pass
    return (f"unexpected error: {type(exc).__name__}: {_first_line(exc)}",
            "this looks like a bug; run again with --debug for the traceback and report it")
