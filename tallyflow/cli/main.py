"""The ``tallyflow`` command line: thin wrappers over flows and tasks, for people and scripts.

Every error ends as one line (plus a hint) and a non-zero exit; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback
from typing import Any

# Before anything imports Prefect: no telemetry from a billing CLI (and on a closed network it
# only produces a "database is locked" traceback), and Prefect's per-task INFO lines stay out of
# the way of the command's own output unless the user asks for them.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A failed run's traceback belongs in the run's logs (the UI) and behind --debug, not on the
# terminal of someone who mistyped a bucket name: the command prints one line instead.
# The one Tallyflow setting read at import, and straight from the environment: it sets up
# Prefect's own settings, which Prefect reads when it is imported (docs/architecture.md §12).
if "--debug" not in sys.argv[1:] and os.environ.get("TALLYFLOW_DEBUG") != "1":
    for _handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{_handler}_LEVEL", "CRITICAL")

import typer
from typer.core import TyperGroup

# Usage errors (bad options) already print one line and exit 2; exits and aborts pass as well.
# Typer carries its own copy of click, so its classes are the ones to let through.
_PASS_THROUGH: tuple[type[BaseException], ...] = tuple(
    cls for cls in (typer.Exit, typer.Abort, getattr(typer, "_click", None) and
                    typer._click.exceptions.ClickException)
    if isinstance(cls, type)
)

DEBUG_ENV = "TALLYFLOW_DEBUG"
CANCELLED_EXIT = 143  # 128 + SIGTERM, what shells report for a terminated command


class ErrorsInOneLine(TyperGroup):
    """Turns any error of any command into ``error: ...`` / ``hint: ...`` and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            if type(exc).__name__ == "TerminationSignal":
                typer.echo("cancelled: stopped by SIGTERM; the object being loaded was rolled "
                           "back and the run is recorded as cancelled", err=True)
                sys.stderr.flush()
                os._exit(CANCELLED_EXIT)  # task threads may be stuck in I/O: do not join them
            if isinstance(exc, KeyboardInterrupt):
                typer.echo("interrupted", err=True)
                raise typer.Exit(130) from exc
            from tallyflow.errors import exit_code, explain

            if _debugging():
                traceback.print_exception(exc, file=sys.stderr)
            message, hint = explain(exc)
            typer.echo(f"error: {message}", err=True)
            if hint:
                typer.echo(f"hint: {hint}", err=True)
            raise typer.Exit(exit_code(exc)) from exc


def _debugging() -> bool:
    from tallyflow.errors import UserError
    from tallyflow.infra.settings import get_settings

    try:
        return get_settings().debug
    except UserError:  # the settings are what failed: their own variable still counts
        return os.environ.get(DEBUG_ENV) == "1"


def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
) -> None:
    """The root's options; and each command reads the settings anew as it starts, so callers
    that run several commands in one process (tests, embedding code) give each its
    environment (tallyflow/infra/settings.py)."""
    from tallyflow.infra.settings import reset_settings, set_in_environment

    reset_settings()
    if debug:  # for the rest of the command, its flow runs and the processes it starts
        set_in_environment(DEBUG_ENV, "1")


# Each area owns its commands in its own module (tallyflow.cli.AREA) and adds them with its
# ``register``; ``db`` is one Typer app. In this order they are listed by ``--help``.
AREAS = ("db", "catalog", "ingest", "events", "usage", "billing", "subscriptions", "wallets",
         "coupons", "invoices", "credit_notes", "webhooks", "alerts", "exports", "archive", "ops",
         "demo", "api")
# The top-level command names each area adds (a test keeps this equal to what they register),
# so a command imports only its own area: importing all of them cost a small ingest start-up
# time (the demo's rating models, every area's imports; docs/scaling.md §6) for commands it never
# runs.
COMMANDS: dict[str, str] = {
    "db": "db",
    "apply": "catalog", "catalog": "catalog",
    "ingest": "ingest", "reingest": "ingest", "rejects": "ingest", "sources": "ingest",
    "mappings": "ingest",
    "events": "events",
    "usage": "usage", "snapshot": "usage",
    "billing": "billing",
    "subscriptions": "subscriptions",
    "wallets": "wallets",
    "coupons": "coupons",
    "invoices": "invoices",
    "credit-notes": "credit_notes",
    "webhooks": "webhooks",
    "alerts": "alerts",
    "export": "exports",
    "archive": "archive",
    "serve": "ops", "runs": "ops", "status": "ops", "health": "ops", "prefect": "ops",
    "automations": "ops",
    "demo": "demo",
    "api": "api", "api-keys": "api",
}


# Commands that call tallyflow.cli.common.start_up_done once their imports are done: until
# then Python's cycle collector is off (see there).
COLLECT_AFTER_START_UP = frozenset({"ingest", "reingest"})


def build_app(command: str | None = None) -> typer.Typer:
    """The command line with every area, or with only the area that adds ``command`` when it
    is a known command name (anything else, ``--help`` or a typo, gets every area, so help
    and "No such command" read the same as ever)."""
    built = typer.Typer(
        cls=ErrorsInOneLine,
        help="Tallyflow: usage-based billing for AI token pricing on Prefect and PostgreSQL.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    built.callback()(_options)
    only = COMMANDS.get(command) if command else None
    for area in AREAS:
        if only is not None and area != only:
            continue
        module = importlib.import_module(f"tallyflow.cli.{area}")
        if area == "db":
            built.add_typer(module.app, name="db")
        else:
            module.register(built)
    return built


def command_name(args: list[str]) -> str | None:
    """The command a command line names: its first word that is not an option (the root's
    options, ``--debug`` and ``--help``, take no value)."""
    for arg in args:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str) -> typer.Typer:
    """``app``: the whole command line, for whoever imports it (tests, embedding code);
    built on first use, once."""
    if name == "app":
        built = globals()["app"] = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """The ``tallyflow`` script: the command, then a quick exit.

    What a normal exit does after the command (join threads, atexit handlers: Prefect's log
    and event flushes, logging) runs as usual; then the process ends with ``os._exit`` instead
    of tearing down every module the command imported (Prefect's alone cost a quarter of a
    small ingest, issue 11; docs/scaling.md §6). Engines are disposed first, so PostgreSQL sees
    clean disconnects.
    """
    command = command_name(sys.argv[1:])
    if command in COLLECT_AFTER_START_UP:
        gc.disable()
    try:
        build_app(command)()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    _exit_now(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # SystemExit("message") prints and exits 1, as Python does
    return 1


def _exit_now(code: int) -> None:
    import atexit
    import threading

    # As interpreter exit does: threading's exit callbacks (Prefect drains its log and event
    # queues to the API there), joining the threads that are not daemons, then atexit.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    if "tallyflow.infra.db" in sys.modules:
        from tallyflow.infra import db

        db.dispose_engines()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
