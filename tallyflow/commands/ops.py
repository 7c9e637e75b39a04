"""``tallyflow serve`` and ``tallyflow runs``: operate the deployments and read run history."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.resources import billing_engine


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("runs")(runs)
    automations = typer.Typer(help="Prefect automations: who is notified of what.",
                              no_args_is_help=True)
    automations.command("apply")(apply_automations)
    app.add_typer(automations, name="automations")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def serve(
    only: list[str] | None = typer.Option(
        None, "--only", help="Serve only these deployment names (repeatable)."
    ),
    embedded: bool = typer.Option(
        False, "--embedded",
        help="Bill into this machine's embedded PostgreSQL (when TALLYFLOW_DATABASE_URL is unset).",
    ),
    log_level: str = typer.Option(
        "INFO", "--log-level", help="Log level of the served runs, as the Prefect UI shows them."
    ),
) -> None:
    """Serve the deployments of deployments/prefect.yaml from this process (one machine).

    Needs a Prefect server (PREFECT_API_URL, e.g. from `prefect server start`) and a database:
    TALLYFLOW_DATABASE_URL, or --embedded on purpose. Applies deployments/automations.yaml when
    TALLYFLOW_NOTIFY_WEBHOOK_URL is set.
    """
    import os

    from prefect.settings import PREFECT_API_URL

    from deployments.serve import serve as serve_deployments
    from tallyflow import db, migrate
    from tallyflow.settings import DATABASE_URL_ENV, EMBEDDED_ENV, configured_database_url

    if not PREFECT_API_URL.value():
        raise _fail("no Prefect server: run `prefect server start` and set PREFECT_API_URL "
                    "(e.g. http://127.0.0.1:4200/api) so schedules and runs outlive this process")
    if not configured_database_url():
        if not embedded:
            raise _fail(f"no database configured: set {DATABASE_URL_ENV}, or pass --embedded to "
                        "bill into this machine's embedded PostgreSQL on purpose")
        # Served runs are subprocesses: they inherit the URL and never start a server of their own.
        os.environ[DATABASE_URL_ENV] = db.start_embedded()
        os.environ[EMBEDDED_ENV] = "1"
    problem = migrate.schema_problem(db.get_engine())
    if problem:
        raise _fail(problem)
    _announce_automations()
    # The CLI keeps Prefect quiet for its own commands; served runs must log to the UI. Served
    # runs take their settings from this process's settings context (not only its environment),
    # so both are set before serving.
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    os.environ["PREFECT_LOGGING_LEVEL"] = log_level.upper()
    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: log_level.upper()}):
        serve_deployments(only)


def _announce_automations() -> None:
    from tallyflow.settings import NOTIFY_WEBHOOK_ENV, notify_webhook_url

    url = notify_webhook_url()
    if not url:
        typer.echo(f"notifications: off (set {NOTIFY_WEBHOOK_ENV} to be told of failed runs and "
                   "wallet alerts)")
        return
    from deployments.automations import apply_automations as apply

    names = apply(url)
    typer.echo(f"notifications: {len(names)} automation(s) applied ({', '.join(names)})")


def apply_automations() -> None:
    """Apply deployments/automations.yaml to the Prefect server (a deploy step with workers)."""
    from prefect.settings import PREFECT_API_URL

    from tallyflow.settings import NOTIFY_WEBHOOK_ENV, notify_webhook_url

    if not PREFECT_API_URL.value():
        raise _fail("no Prefect server: set PREFECT_API_URL to the server the workers use")
    if not notify_webhook_url():
        raise _fail(f"set {NOTIFY_WEBHOOK_ENV} to the webhook that should receive notifications")
    _announce_automations()


def runs(
    limit: int = typer.Option(20, "--limit", min=1, help="Runs per kind."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent ingest, usage snapshot and wallet runs with their figures and flow run ids."""
    from tasks.history import recent_runs

    rows = recent_runs(billing_engine(), limit)
    from flows.links import ui_url

    ui = ui_url()
    for row in rows:
        run_id = row["flow_run_id"]
        row["url"] = f"{ui}/runs/flow-run/{run_id}" if ui and run_id else None
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    console = Console()
    table = Table(title="recent runs (newest first)")
    for column in ("kind", "started", "status", "figures", "flow run"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["kind"], _short_time(row["started_at"]), row["status"],
                      _figures(row["figures"]), row["url"] or row["flow_run_id"] or "")
    console.print(table)
    if not ui:
        console.print("Set PREFECT_API_URL (a running `prefect server start`) to get links to "
                      "each run's page and artifacts in the Prefect UI.")


def _short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())
