"""Run history that never lies: every flow run ends completed, failed, cancelled or crashed.

Three mechanisms, because no single one sees every ending:

- ``@tracked`` (under ``@flow``) records the run as it starts, its figures when it returns and
  its error when it raises; a SIGTERM (a cancel from the UI, a worker or a person) arrives as
  Prefect's ``TerminationSignal`` in the flow's thread, is recorded ``cancelled`` and the process
  is made to exit within seconds even if a task thread is stuck in storage or database I/O
  (closing its connection is what rolls the current object back).
- A cancel from the UI reaches a run no worker supervises (a CLI run) through the heartbeat
  thread, which also checks whether Prefect was asked to cancel its runs and then sends this
  process the SIGTERM a worker would send.
- Prefect state hooks (``HOOKS``) for what Prefect sees outside the flow's body: parameters that
  fail validation, crashes, and cancellations handled by a runner in another process.
- A liveness heartbeat: a thread in the running process bumps ``heartbeat_at`` of its runs every
  few seconds through ordinary short transactions (so it works behind a connection pooler, unlike
  session-held advisory locks or backend pids). A process killed with ``kill -9`` stops beating;
  the next command that reads or writes history (``reap_stale``) marks its runs ``crashed``.

Prefect's own flow heartbeats stay off: they cost every CLI run about a second.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.settings import get_settings

STOP_DEADLINE = 5.0  # seconds from SIGTERM to a gone process, recording included
FINAL = ("completed", "failed", "cancelled", "crashed")

# What people call each flow in ``tallyflow runs``.
KINDS = {
    "ingest-events": "ingest",
    "reingest-object": "re-ingest",
    "usage-snapshot": "usage snapshot",
    "wallet-deductions": "wallets",
    "close-periods": "period close",
    "invoice-pdfs": "invoice PDFs",
    "deliver-webhooks": "webhooks",
    "refresh-balances": "balances",
    "billing-cycle": "billing",
    "billing-backfill": "backfill",
    "rerate-subscription": "re-rate",
}


# Why a run ended, told apart (``tallyflow runs`` shows it beside the status). The patterns
# read the recorded error, so runs recorded before causes existed are told apart too.
_DB_DOWN = re.compile(
    r"OperationalError|InterfaceError|cannot reach the database|connection refused"
    r"|could not connect|server closed the connection|terminating connection"
    r"|connection (?:is )?(?:lost|closed)|the database system is (?:shutting down|starting up)"
    r"|connection timed out|timeout expired",
    re.IGNORECASE,
)
_DEADLINE = re.compile(
    r"TimedOut|exceeded timeout|statement timeout|lock timeout|deadline", re.IGNORECASE,
)
NO_LIVENESS = "the process stopped reporting"


def cause_of(status: str, error: str | None) -> str:
    """``database unreachable``, ``deadline``, ``cancelled``, ``crashed (no liveness)``,
    ``crashed``, ``failed``, or the status itself (running, completed)."""
    text_ = error or ""
    if status == "cancelled":
        return "cancelled"
    if status == "crashed":
        return "crashed (no liveness)" if text_.startswith(NO_LIVENESS) else "crashed"
    if status == "failed":
        if _DEADLINE.search(text_):  # a statement timeout is a deadline, not an outage
            return "deadline"
        if _DB_DOWN.search(text_):
            return "database unreachable"
        return "failed"
    return status


def heartbeat_seconds() -> float:
    """``TALLYFLOW_HEARTBEAT_SECONDS`` (tallyflow/infra/settings.py)."""
    return get_settings().heartbeat_seconds


def stale_seconds() -> float:
    """A run is dead when it has not beaten for this long (several missed beats, so a busy
    database or a GC pause does not kill a live run)."""
    return max(get_settings().stale_seconds, 3 * heartbeat_seconds())


def _engine() -> Engine:
    from tallyflow.infra.resources import billing_engine

    return billing_engine()


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------

_STALE = text(
    """
    select flow_run_id from run_history
    where status = 'running' and heartbeat_at < now() - make_interval(secs => :stale)
      and not (flow_run_id = any(cast(:mine as text[])))
    """
)
_REAP = text(
    """
    update run_history set status = 'crashed', finished_at = now(),
      error = 'the process stopped reporting at '
              || to_char(heartbeat_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')
              || ' UTC (killed, or its machine was lost); rerun it: work is idempotent'
    where status = 'running' and heartbeat_at < now() - make_interval(secs => :stale)
      and not (flow_run_id = any(cast(:known as text[])))
      and not (flow_run_id = any(cast(:mine as text[])))
    returning flow_run_id, error
    """
)
_ENDED_IN_PREFECT = text(
    """
    update run_history set status = :status, error = :error,
      finished_at = coalesce(cast(:finished as timestamptz), now())
    where flow_run_id = :id and status = 'running'
    returning flow_run_id, error
    """
)


def reap_stale(engine: Engine, stale: float | None = None) -> list[str]:
    """Mark runs whose process stopped beating ``crashed`` (with their ingest/wallet rows).

    Only ``run_history`` is touched unless something died, so the check never waits on the
    busy tables of running flows."""
    with engine.begin() as conn:
        return _reap(conn, stale)


def _reap(conn: Connection, stale: float | None = None) -> list[str]:
    """A silent run's ending as Prefect recorded it when Prefect knows one (a run whose
    ending could not be written here, the database being down, says why it failed), else
    ``crashed``: nothing reported its end, so its process or machine was lost."""
    stale = stale if stale is not None else stale_seconds()
    # The runs this process is running are alive whatever their heartbeat says: the check itself
    # runs here (a beat delayed by a slow database must not make a run reap itself).
    mine = active_runs()
    silent = [str(r) for r in conn.execute(_STALE, {"stale": stale, "mine": mine}).scalars()]
    known = prefect_endings(silent) if silent else {}
    ended: list[tuple[str, str | None, str]] = []
    for flow_run_id, (status, error, finished) in known.items():
        row = conn.execute(_ENDED_IN_PREFECT, {"id": flow_run_id, "status": status,
                                               "error": error, "finished": finished}).first()
        if row is not None:
            ended.append((flow_run_id, error, status))
    dead = conn.execute(_REAP, {"stale": stale, "known": list(known), "mine": mine}).all()
    ended += [(str(flow_run_id), error, "crashed") for flow_run_id, error in dead]
    for flow_run_id, error, status in ended:
        _finish_records(conn, flow_run_id, status, error)
    return [flow_run_id for flow_run_id, _, _ in ended]


_PREFECT_FINAL = {"COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled",
                  "CRASHED": "crashed"}


def prefect_api_configured() -> bool:
    """Whether a Prefect API is set (never start a temporary server just to read history)."""
    try:
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    except Exception:
        return False


@contextlib.contextmanager
def _quick_client(timeout: float) -> Iterator[Any]:
    """A Prefect client that answers or gives up within ``timeout``: Prefect's client retries a
    timed-out request five times with backoff (about a minute), too long for a liveness check
    or a reaper holding a transaction. The setting applies to this thread's context only."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(
        sync_client=True, httpx_settings={"timeout": timeout}
    ) as client:
        yield client


def prefect_endings(ids: list[str]) -> dict[str, tuple[str, str | None, datetime | None]]:
    """Final states Prefect recorded for these flow runs: id -> (status, message, end)."""
    if not prefect_api_configured():
        return {}
    try:
        out: dict[str, tuple[str, str | None, datetime | None]] = {}
        with _quick_client(3.0) as client:
            for run_id in ids:
                try:
                    run = client.read_flow_run(UUID(run_id))
                except Exception:  # a run Prefect does not know (or an id that is no UUID)
                    continue
                state = run.state
                if state is None or state.type.value not in _PREFECT_FINAL:
                    continue
                message = str(state.message or state.name)
                if state.name == "TimedOut":
                    message = f"deadline: {message}"
                out[run_id] = (_PREFECT_FINAL[state.type.value], message[:2000], run.end_time)
        return out
    except Exception:  # no server answering: the heartbeat's verdict stands
        return {}


def start(
    engine: Engine, flow_run_id: str, kind: str, name: str | None, parent: str | None
) -> None:
    """Record a run as running (a retried run's row starts over), after marking dead runs."""
    with engine.begin() as conn:
        _reap(conn)
        conn.execute(
            text(
                """
                insert into run_history (flow_run_id, kind, name, parent_flow_run_id, host, pid)
                values (:id, :kind, :name, :parent, :host, :pid)
                on conflict (flow_run_id) do update set status = 'running', error = null,
                  finished_at = null, heartbeat_at = now(), host = excluded.host,
                  pid = excluded.pid, name = coalesce(excluded.name, run_history.name)
                """
            ),
            {"id": flow_run_id, "kind": kind, "name": name, "parent": parent,
             "host": socket.gethostname(), "pid": os.getpid()},
        )


def finish(
    engine: Engine,
    flow_run_id: str,
    status: str,
    error: str | None = None,
    figures: dict[str, Any] | None = None,
    kind: str | None = None,
    name: str | None = None,
    quick: bool = False,
) -> bool:
    """Record a final state once: the first ending wins (a cancel is not overwritten by the
    crash Prefect reports for the same signal). A run that never started (its parameters
    failed validation) gets its row here. True when this call recorded the ending."""
    if status not in FINAL:
        raise ValueError(f"not a final status: {status!r}")
    with engine.begin() as conn:
        if quick:  # leaving on a signal: never wait long on a lock or a busy server
            conn.execute(text("set local lock_timeout = '1s'"))
            conn.execute(text("set local statement_timeout = '2s'"))
        done = conn.execute(
            text(
                """
                insert into run_history (flow_run_id, kind, name, status, error, figures,
                                         finished_at, host, pid)
                values (:id, :kind, :name, :status, :error, cast(:figures as jsonb), now(),
                        :host, :pid)
                on conflict (flow_run_id) do update set status = excluded.status,
                  error = excluded.error, finished_at = now(),
                  figures = coalesce(excluded.figures, run_history.figures)
                where run_history.status = 'running'
                returning flow_run_id
                """
            ),
            {"id": flow_run_id, "kind": kind or "unknown", "name": name, "status": status,
             "error": error, "figures": json.dumps(figures, default=str) if figures else None,
             "host": socket.gethostname(), "pid": os.getpid()},
        ).first()
    # Its own transaction: the run's row above is recorded even if these rows are locked by
    # whatever the run was stuck on.
    with engine.begin() as conn:
        if quick:
            conn.execute(text("set local lock_timeout = '1s'"))
            conn.execute(text("set local statement_timeout = '2s'"))
        _finish_records(conn, flow_run_id, status, error)
    return done is not None


def _finish_records(conn: Connection, flow_run_id: str, status: str, error: str | None) -> None:
    """The ingest and wallet run rows of this flow run end with it (when they did not record an
    ending of their own, e.g. the run stopped half-way)."""
    for table, _figures in _LEDGERS.values():
        conn.execute(
            text(
                f"update {table} set status = :status, error = :error, finished_at = now()"  # noqa: S608 - fixed names
                " where flow_run_id = :id and status = 'running'"
            ),
            {"status": status, "error": error, "id": flow_run_id},
        )


# --------------------------------------------------------------------------------------------
# Heartbeat: one thread per process beats for every run of this process
# --------------------------------------------------------------------------------------------

_active: dict[str, int] = {}  # flow run id -> nesting count
_stack = threading.local()
_lock = threading.Lock()
_beater: threading.Thread | None = None
_watcher: threading.Thread | None = None
_beat_engine: Engine | None = None  # the engine the runs of this process write with
_wake = threading.Event()


def _beat_forever() -> None:
    """Beat for the runs of this process. Only the database is asked here: the cancel watch has
    its own thread, because a slow Prefect API (its client retries a timeout with backoff for
    a minute) once silenced the beats long enough for a live run to be recorded crashed."""
    while True:
        _wake.wait(heartbeat_seconds())
        _wake.clear()
        with _lock:
            ids = list(_active)
        if not ids:
            continue
        try:
            with (_beat_engine or _engine()).begin() as conn:
                conn.execute(
                    text(
                        "update run_history set heartbeat_at = now()"
                        " where flow_run_id = any(cast(:ids as text[])) and status = 'running'"
                    ),
                    {"ids": ids},
                )
        except Exception:  # a missed beat is retried; the run goes on
            pass


def _watch_cancels() -> None:
    while True:
        time.sleep(heartbeat_seconds())
        with _lock:
            ids = list(_active)
        if ids and _cancel_requested(ids):
            # A cancel from the UI of a run no worker supervises (a CLI run): stop as a worker
            # would stop it, with a SIGTERM to this process.
            os.kill(os.getpid(), signal.SIGTERM)


def _cancel_requested(ids: list[str]) -> bool:
    """Whether Prefect was asked to cancel one of these runs (state Cancelling)."""
    try:
        from prefect.client.schemas.objects import StateType

        with _quick_client(2.0) as client:
            for run_id in ids:
                state = client.read_flow_run(UUID(run_id)).state
                if state is not None and state.type == StateType.CANCELLING:
                    return True
    except Exception:  # no API, or a run Prefect does not know: not a cancel
        return False
    return False


def _attach(flow_run_id: str, engine: Engine) -> None:
    global _beater, _beat_engine, _watcher
    with _lock:
        _beat_engine = engine
        _active[flow_run_id] = _active.get(flow_run_id, 0) + 1
        if _beater is None or not _beater.is_alive():
            _beater = threading.Thread(target=_beat_forever, name="tallyflow-heartbeat",
                                       daemon=True)
            _beater.start()
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch_cancels, name="tallyflow-cancel-watch",
                                        daemon=True)
            _watcher.start()


def _detach(flow_run_id: str) -> None:
    with _lock:
        left = _active.get(flow_run_id, 0) - 1
        if left > 0:
            _active[flow_run_id] = left
        else:
            _active.pop(flow_run_id, None)


def active_runs() -> list[str]:
    with _lock:
        return list(_active)


# --------------------------------------------------------------------------------------------
# The flow decorator and the state hooks
# --------------------------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def figures_of(result: Any) -> dict[str, object] | None:
    """The scalar figures of a flow's summary (one level of nesting flattened), for the list,
    and the units it contained (tasks/runs/containment.py), which the list names."""
    if not isinstance(result, dict):
        return None
    out: dict[str, object] = {}
    for key, value in result.items():
        if key == "contained" and isinstance(value, list):
            # the units a run contained, by name (``tallyflow runs`` lists them)
            out[key] = [{k: _plain(v) for k, v in item.items()} for item in value[:50]]
        elif isinstance(value, dict):
            for inner, v in value.items():
                if _scalar(v):
                    out[f"{key}.{inner}"] = _plain(v)
        elif _scalar(value):
            out[key] = _plain(value)
    return out


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | Decimal | bool | datetime) or value is None


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def describe_error(exc: BaseException) -> str:
    text_ = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, ValueError | LookupError) or type(exc).__module__ != "builtins":
        text_ = f"{type(exc).__name__}: {text_}"
    return text_[:2000]


# Called once when a SIGTERM stops this process's runs (the CLI prints its one line here).
CANCEL_LISTENERS: list[Callable[[], None]] = []


def _stop_now(flow_run_id: str) -> None:
    """A SIGTERM reached a flow: record every run of this process cancelled (here and in
    Prefect), then leave at once.

    Leaving is the only way to stop whatever a task thread is blocked on: Prefect's task runner
    would join those threads (as would a normal interpreter exit) for as long as the storage
    or the database takes. Ending the process closes its database connections, so the object
    being loaded rolls back and the ledger retries it on the next run.
    """
    watchdog = threading.Timer(STOP_DEADLINE, os._exit, (143,))
    watchdog.daemon = True  # whatever happens below, the process is gone within the deadline
    watchdog.start()
    ids = sorted({flow_run_id, *active_runs()})
    _record_cancel(ids)
    _cancel_in_prefect(ids)
    for listener in CANCEL_LISTENERS:
        try:
            listener()
        except Exception:  # leaving matters more than the message
            continue
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            continue
    os._exit(143)


def _cancel_in_prefect(ids: list[str]) -> None:
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True, httpx_settings={"timeout": 2.0}) as client:
            for run_id in ids:
                client.set_flow_run_state(
                    run_id, Cancelled(message="cancelled: the process received SIGTERM"),
                    force=True,
                )
    except Exception:  # best effort: our own history already says so
        pass


def tracked(fn: Callable[P, R]) -> Callable[P, R]:
    """Record the run's start, figures, error or cancellation (put it under ``@flow``).

    The wrapper is rebuilt on the flow function's module globals: Prefect and pydantic resolve
    the (string) parameter annotations there, so the flow's form and validation are unchanged.
    """
    impl = _run_tracked

    def run(*args: Any, **kwargs: Any) -> Any:
        return impl(fn, args, kwargs)

    rebuilt = types.FunctionType(run.__code__, fn.__globals__, fn.__name__, None,
                                 run.__closure__)
    return functools.update_wrapper(rebuilt, fn)


def _run_tracked(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from prefect import runtime
    from prefect.exceptions import TerminationSignal

    flow_run_id = str(runtime.flow_run.id or "")
    if not flow_run_id:  # called as a plain function (``.fn``): nothing to record
        return fn(*args, **kwargs)
    kind = KINDS.get(str(runtime.flow_run.flow_name), str(runtime.flow_run.flow_name))
    stack: list[str] = getattr(_stack, "runs", [])
    _stack.runs = stack
    engine = _engine()
    start(engine, flow_run_id, kind, runtime.flow_run.name, stack[-1] if stack else None)
    _attach(flow_run_id, engine)
    stack.append(flow_run_id)
    try:
        result = fn(*args, **kwargs)
    except TerminationSignal:
        _stop_now(flow_run_id)
        raise
    except Exception as exc:
        try:
            finish(engine, flow_run_id, "failed", describe_error(exc), _summary_of(exc))
        except Exception:  # the database is down: Prefect keeps the real error, and the
            pass  # next history read takes it from there (``_reap``), not "crashed"
        explained = explained_failure(exc)
        if explained is None:
            raise
        return explained
    except BaseException as exc:  # KeyboardInterrupt, SystemExit
        finish(engine, flow_run_id, "crashed", describe_error(exc))
        raise
    else:
        finish(engine, flow_run_id, "completed", figures=figures_of(result))
        return result
    finally:
        stack.pop()
        _detach(flow_run_id)


def explained_failure(exc: BaseException) -> Any | None:
    """The run's Failed state, its message led by the one line and hint people act on.

    Prefect words a failed run's message from ``str(exc)``: for a driver error (the database
    unreachable, a bad URL) that is the driver's text, which the run-failed notification and the
    UI then show. Returning a Failed state instead of raising keeps everything else as it was: the
    state still carries the exception (a caller, a parent flow and the history hooks get the same
    exception back), and the server still decides retries on a proposed Failed state. A
    ``UserError`` already says its hint in ``str()``, and an error nobody explains (a bug) keeps
    Prefect's own wording, so both are raised as before (``None`` here).
    """
    from tallyflow.errors import UserError, explain

    if isinstance(exc, UserError) or not isinstance(exc, Exception):
        return None
    message, hint = explain(exc)
    if hint is None or message.startswith("unexpected error"):
        return None
    from prefect.context import FlowRunContext
    from prefect.states import exception_to_failed_state
    from prefect.utilities.asyncutils import run_coro_as_sync

    context = FlowRunContext.get()
    return run_coro_as_sync(exception_to_failed_state(
        exc, message=f"{message}. Hint: {hint}.",
        result_store=getattr(context, "result_store", None), write_result=True,
    ))


def _summary_of(exc: BaseException) -> dict[str, object] | None:
    return figures_of(getattr(exc, "summary", None))


def _record_cancel(ids: list[str]) -> None:
    """Every run of this process ends cancelled (the signal stops the whole process)."""
    engine = _engine()
    for run_id in ids:
        try:
            finish(engine, run_id, "cancelled", "cancelled: the process received SIGTERM",
                   quick=True)
        except Exception:  # the database may be what we were stuck on
            continue


def _hook(status: str) -> Callable[[Any, Any, Any], None]:
    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        error = None
        if status != "completed":
            error = state.message or status
            try:
                outcome = state.result(raise_on_failure=False)
            except BaseException:  # a missing result leaves the message
                outcome = None
            if isinstance(outcome, BaseException):
                error = describe_error(outcome)
                from prefect.exceptions import TerminationSignal

                if isinstance(outcome, TerminationSignal):
                    return  # ``tracked`` recorded the cancellation
        try:
            finish(_engine(), str(flow_run.id), status, error,
                   kind=KINDS.get(flow.name, flow.name), name=flow_run.name)
        except Exception:  # the heartbeat reaper is the backstop
            pass

    hook.__name__ = f"tallyflow_history_{status}"
    return hook


# Prefect state hooks for every Tallyflow flow: ``@flow(..., **HOOKS)``.
# Typed loosely on purpose: ``**HOOKS`` must fit every overload of Prefect's ``flow``.
HOOKS: dict[str, Any] = {
    "on_failure": [_hook("failed")],
    "on_crashed": [_hook("crashed")],
    "on_cancellation": [_hook("cancelled")],
}


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------

# The figures of an ingest run and of a wallet run, as ``tallyflow runs`` shows them: their own
# ledgers hold them (``ingest_runs``, ``wallet_runs``: written in the runs' data transactions),
# whether or not a flow run tracked the run (docs/architecture.md §10).
_INGEST_FIGURES = """jsonb_build_object('source', {t}.source, 'objects', {t}.objects,
                'records', {t}.records, 'records_emitted', {t}.records_emitted,
                'records_empty', {t}.records_empty, 'events', {t}.events,
                'accepted', {t}.accepted, 'duplicates', {t}.duplicates,
                'conflicts', {t}.conflicts, 'rejected', {t}.rejected,
                'unbillable', {t}.unbillable, 'failed_objects', {t}.failed_objects,
                'seconds', {t}.seconds)"""
_WALLET_FIGURES = """jsonb_build_object('as_of', {t}.as_of, 'customers', {t}.customers,
                'wallets_touched', {t}.wallets_touched, 'credits_deducted', {t}.credits_deducted,
                'corrections', {t}.corrections, 'alerts', {t}.alerts,
                'negative_wallets', {t}.negative_wallets)"""
_LEDGERS = {"ingest": ("ingest_runs", _INGEST_FIGURES), "wallets": ("wallet_runs", _WALLET_FIGURES)}

_RUNS = text(
    f"""
    select h.flow_run_id, h.kind, h.name, h.parent_flow_run_id, h.status, h.error,
           h.started_at, h.finished_at, coalesce(
             (select {_INGEST_FIGURES.format(t="i")}
              from ingest_runs i where i.flow_run_id = h.flow_run_id
              order by i.id desc limit 1),
             (select {_WALLET_FIGURES.format(t="w")}
              from wallet_runs w where w.flow_run_id = h.flow_run_id
              order by w.id desc limit 1),
             h.figures) as figures
    from run_history h
    where (cast(:status as text) is null or h.status = :status)
    order by h.started_at desc limit :n
    """  # noqa: S608 - fixed text
)

# Runs recorded before run_history existed, or by direct calls outside a flow run.
_UNTRACKED = {
    kind: f"""
        select started_at, finished_at, status, error, flow_run_id,
               {figures.format(t="x")} as figures
        from {table} x
        where not exists (select 1 from run_history h where h.flow_run_id = x.flow_run_id)
          and (cast(:status as text) is null or status = :status)
        order by id desc limit :n
    """  # noqa: S608 - fixed names
    for kind, (table, figures) in _LEDGERS.items()
}


def _clean(figures: dict[str, Any] | None) -> dict[str, object]:
    return {k: (format(v, "f") if isinstance(v, Decimal) else v)
            for k, v in (figures or {}).items()}


def recent_runs(
    engine: Engine, limit: int = 20, status: str | None = None
) -> list[dict[str, Any]]:
    """The newest runs of every flow (billing parents included), dead ones marked first."""
    reap_stale(engine)
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for row in conn.execute(_RUNS, {"n": limit, "status": status}).mappings():
            rows.append({
                "kind": row["kind"], "name": row["name"], "started_at": row["started_at"],
                "finished_at": row["finished_at"], "status": row["status"],
                "error": row["error"], "flow_run_id": row["flow_run_id"],
                "parent_flow_run_id": row["parent_flow_run_id"],
                "figures": _clean(row["figures"]),
            })
        for kind, sql in _UNTRACKED.items():
            for row in conn.execute(text(sql), {"n": limit, "status": status}).mappings():
                rows.append({
                    "kind": kind, "name": None, "started_at": row["started_at"],
                    "finished_at": row["finished_at"], "status": row["status"],
                    "error": row["error"], "flow_run_id": row["flow_run_id"],
                    "parent_flow_run_id": None, "figures": _clean(row["figures"]),
                })
    rows.sort(key=lambda r: r["started_at"], reverse=True)
    return rows[:limit]


# A run that failed before it reached the database (no URL on the worker, a schema not
# current: tallyflow.infra.resources) cannot write its own history; Prefect has it.
_BEFORE_DATABASE = "ResourceError"
_ADOPT = text(
    """
    insert into run_history (flow_run_id, kind, name, status, error, started_at, heartbeat_at,
                             finished_at, host)
    values (:id, :kind, :name, :status, :error, :started, :started, :finished, 'prefect')
    on conflict (flow_run_id) do nothing
    """
)


def adopt_prefect_failures(engine: Engine, limit: int = 50) -> int:
    """Record the Tallyflow runs Prefect saw fail before they reached the database (they
    never wrote a row of their own), as Prefect recorded them; returns how many were added.
    Nothing without a configured Prefect API."""
    if not prefect_api_configured():
        return 0
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True, httpx_settings={"timeout": 3.0}) as client:
            flows = {f.id: f.name for f in client.read_flows(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(KINDS))))}
            if not flows:
                return 0
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=list(KINDS))),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit,
            )
    except Exception:  # no server answering: history shows what it has
        return 0
    added = 0
    with engine.begin() as conn:
        for run in runs:
            message = str(run.state.message or "") if run.state else ""
            if _BEFORE_DATABASE not in message or run.state is None:
                continue
            started = run.start_time or run.expected_start_time or run.created
            added += conn.execute(_ADOPT, {
                "id": str(run.id), "kind": KINDS.get(flows.get(run.flow_id, ""), "unknown"),
                "name": run.name, "status": _PREFECT_FINAL[run.state.type.value],
                "error": message[:2000], "started": started,
                "finished": run.end_time or started,
            }).rowcount
    return added


def failed_objects(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """Objects the ledger could not read, with the reason (retried by the next run)."""
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                text(
                    """
                    select o.path as object, o.source, o.error, o.attempts,
                           r.flow_run_id, r.finished_at as last_attempt_at
                    from ingest_objects o left join ingest_runs r on r.id = o.run_id
                    where o.status = 'failed'
                    order by o.id desc limit :n
                    """
                ),
                {"n": limit},
            ).mappings()
        ]
