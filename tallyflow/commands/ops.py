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


def serve(
    only: list[str] | None = typer.Option(
        None, "--only", help="Serve only these deployment names (repeatable)."
    ),
) -> None:
    """Serve the deployments of deployments/prefect.yaml from this process (one machine).

    Point PREFECT_API_URL at a running Prefect server (`prefect server start`) to see and
    trigger the runs in its UI.
    """
    from deployments.serve import serve as serve_deployments

    billing_engine()  # the schema is current before the first scheduled run
    serve_deployments(only)


def runs(
    limit: int = typer.Option(20, "--limit", min=1, help="Runs per kind."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent ingest, usage snapshot and wallet runs with their figures and flow run ids."""
    from tasks.history import recent_runs

    rows = recent_runs(billing_engine(), limit)
    ui = _ui_url()
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


def _ui_url() -> str | None:
    """The Prefect UI's address when a server is configured (its runs pages hold artifacts)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    api = PREFECT_API_URL.value()
    if not ui and api:
        ui = api.removesuffix("/").removesuffix("/api")
    return ui or None


def _short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())
