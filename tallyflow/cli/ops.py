"""``tallyflow serve`` and ``tallyflow runs``: operate the deployments and read run history."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.infra.resources import billing_engine


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("runs")(runs)
    app.command("status")(status)
    app.command("health")(health)
    app.add_typer(prefect_app, name="prefect")
    automations = typer.Typer(help="Prefect automations: who is notified of what.",
                              no_args_is_help=True)
    automations.command("apply")(apply_automations)
    app.add_typer(automations, name="automations")


METRICS_PORT = 9108  # `tallyflow serve`'s Prometheus endpoint (`tallyflow api`: its own port)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


prefect_app = typer.Typer(
    help="The local Prefect server Tallyflow starts once and reuses (unless PREFECT_API_URL "
         "is set).",
    no_args_is_help=True,
)


@prefect_app.command("start")
def prefect_start() -> None:
    """Start the local Prefect server now (commands that run flows start it when needed)."""
    from tallyflow.infra import prefect_server

    if prefect_server.configured_api_url():
        typer.echo(f"PREFECT_API_URL is set ({prefect_server.configured_api_url()}): "
                   "nothing to start")
        return
    info = prefect_server.start()
    typer.echo(f"Prefect UI at {info['ui_url']} (API {info['api_url']})")


@prefect_app.command("stop")
def prefect_stop() -> None:
    """Stop the local Prefect server (its run history stays under TALLYFLOW_HOME)."""
    from tallyflow.infra import prefect_server

    typer.echo("stopped" if prefect_server.stop() else "the local Prefect server was not running")


def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Where things are: the database (password hidden), the Prefect API and its UI."""
    from tallyflow.infra import db, migrate, prefect_server
    from tallyflow.infra.settings import configured_database_url, tallyflow_home

    configured = configured_database_url()
    info: dict[str, Any] = {"home": str(tallyflow_home())}
    if configured:
        info["database"] = db.make_url(db.normalise_url(configured)).render_as_string(
            hide_password=True
        )
    else:
        embedded = db.embedded_status()
        info["database"] = (
            db.make_url(db.start_embedded()).render_as_string(hide_password=True)
            if embedded["running"] else f"embedded, not running ({embedded['data_dir']})"
        )
    if configured or db.embedded_status()["running"]:
        engine = db.get_engine()
        info["schema"] = f"{migrate.current_revision(engine) or 'empty'} (code expects " \
                         f"{migrate.head_revision()})"
    prefect = prefect_server.addresses()
    info.update({"prefect": prefect["mode"], "prefect_api": prefect["api_url"],
                 "prefect_ui": prefect["ui_url"], "prefect_reachable": prefect["reachable"]})
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        typer.echo(f"{key.replace('_', ' '):>17}: {value}")


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
    api: bool = typer.Option(
        False, "--api", help="Also run `tallyflow api` (the Lago-compatible HTTP API) beside them."
    ),
    api_host: str = typer.Option("127.0.0.1", "--api-host", help="With --api: its address."),
    api_port: int = typer.Option(3000, "--api-port", help="With --api: its port."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host",
                                     help="Address of the Prometheus /metrics endpoint."),
    metrics_port: int = typer.Option(
        METRICS_PORT, "--metrics-port", min=0,
        help="Port of the Prometheus /metrics endpoint (billing health gauges); 0: none."),
) -> None:
    """Serve the deployments of deployments/prefect.yaml from this process (one machine).

    Needs a Prefect server (PREFECT_API_URL, e.g. from `prefect server start`) and a database:
    TALLYFLOW_DATABASE_URL, or --embedded on purpose. Applies deployments/automations.yaml when
    TALLYFLOW_NOTIFY_WEBHOOK_URL is set.
    """
    import os

    from prefect.settings import PREFECT_API_URL

    from tallyflow.deployments.serve import serve as serve_deployments
    from tallyflow.infra import db, migrate
    from tallyflow.infra.settings import (
        DATABASE_URL_ENV,
        EMBEDDED_ENV,
        configured_database_url,
        set_in_environment,
    )

    if not PREFECT_API_URL.value():
        raise _fail("no Prefect server: run `prefect server start` and set PREFECT_API_URL "
                    "(e.g. http://127.0.0.1:4200/api) so schedules and runs outlive this process")
    if not configured_database_url():
        if not embedded:
            raise _fail(f"no database configured: set {DATABASE_URL_ENV}, or pass --embedded to "
                        "bill into this machine's embedded PostgreSQL on purpose")
        # Served runs are subprocesses: they inherit the URL and never start a server of their own.
        set_in_environment(DATABASE_URL_ENV, db.start_embedded())
        set_in_environment(EMBEDDED_ENV, "1")
    problem = migrate.schema_problem(db.get_engine())
    if problem:
        raise _fail(problem)
    _announce_automations()
    _start_metrics(db.get_engine(), metrics_host, metrics_port)
    # The CLI keeps Prefect quiet for its own commands; served runs must log to the UI. Served
    # runs take their settings from this process's settings context (not only its environment),
    # so both are set before serving.
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    os.environ["PREFECT_LOGGING_LEVEL"] = log_level.upper()
    api_process = _start_api(api_host, api_port) if api else None
    try:
        with temporary_settings(updates={PREFECT_LOGGING_LEVEL: log_level.upper()}):
            serve_deployments(only)
    finally:
        if api_process is not None:
            api_process.terminate()
            api_process.wait(30)


def _start_metrics(engine: Any, host: str, port: int) -> None:
    """Prometheus' ``/metrics`` (tasks/health.py's figures) from a thread of this process."""
    if not port:
        return
    from tallyflow.tasks.health import serve_metrics

    try:
        serve_metrics(engine, host, port)
    except OSError as exc:
        typer.echo(f"error: cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                   err=True)
        typer.echo("hint: pass --metrics-port with a free port, or --metrics-port 0 for none",
                   err=True)
        raise typer.Exit(1) from None
    typer.echo(f"metrics: http://{host}:{port}/metrics")


def _start_api(host: str, port: int) -> Any:
    """`tallyflow api` as a child process (its own event loop, beside Prefect's), with this
    process's database; stopped when serving stops."""
    import subprocess
    import sys

    from tallyflow.api.server import check_sources
    from tallyflow.api.settings import api_settings

    check_sources(api_settings())
    typer.echo(f"API: http://{host}:{port}/api/v1/ (docs at /docs)")
    return subprocess.Popen([sys.executable, "-m", "tallyflow.cli", "api", "--host", host,
                             "--port", str(port)])


def _announce_automations() -> None:
    from tallyflow.infra.settings import NOTIFY_WEBHOOK_ENV, notify_webhook_url

    url = notify_webhook_url()
    if not url:
        typer.echo(f"notifications: off (set {NOTIFY_WEBHOOK_ENV} to be told of failed runs and "
                   "wallet alerts)")
        return
    from tallyflow.deployments.automations import apply_automations as apply

    names = apply(url)
    typer.echo(f"notifications: {len(names)} automation(s) applied ({', '.join(names)})")


def apply_automations() -> None:
    """Apply deployments/automations.yaml to the Prefect server (a deploy step with workers)."""
    from prefect.settings import PREFECT_API_URL

    from tallyflow.infra.settings import NOTIFY_WEBHOOK_ENV, notify_webhook_url

    if not PREFECT_API_URL.value():
        raise _fail("no Prefect server: set PREFECT_API_URL to the server the workers use")
    if not notify_webhook_url():
        raise _fail(f"set {NOTIFY_WEBHOOK_ENV} to the webhook that should receive notifications")
    _announce_automations()


def health(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")
           ) -> None:
    """Billing health in one look: last completed billing hour, ingest watermark and lag,
    objects failed, drafts waiting and why, contained failures, wallets below threshold or
    negative, invoices awaiting PDFs. Exits 0 even when something needs attention (`ok`
    says so), so it can be read by scripts and people alike."""
    from datetime import UTC, datetime

    from tallyflow.tasks.health import billing_health

    figures = billing_health(billing_engine(), datetime.now(UTC))
    if as_json:
        typer.echo(json.dumps(figures.as_dict(), default=str))
        return
    Console().print(figures.markdown(), markup=False, highlight=False)


def runs(
    limit: int = typer.Option(20, "--limit", min=1, help="How many runs."),
    status: str | None = typer.Option(
        None, "--status", help="Only runs in this state (completed, failed, crashed, ...)."
    ),
    objects: bool = typer.Option(
        False, "--objects",
        help="Instead: objects that failed to load, with the reason, and what holds the "
             "ingest watermark (which object, since when, which run).",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every flow run (ingest, snapshot, wallets, billing and its parents) with status and error.

    A run whose process died (kill -9, a lost machine) is marked crashed here once it has
    missed its heartbeats. A run that contained failures (units that failed alone while every
    other unit completed) lists each: step, unit and error.
    """
    from tallyflow.tasks.runs import (
    FINAL,
    adopt_prefect_failures,
    cause_of,
    failed_objects,
    recent_runs,
)

    if status is not None and status not in (*FINAL, "running"):
        raise typer.BadParameter(
            f"{status!r}; choose one of {', '.join((*FINAL, 'running'))}", param_hint="--status"
        )
    engine = billing_engine()
    if objects:
        from tallyflow.tasks.ingest import watermark_holder

        _print_failed_objects(failed_objects(engine, limit), watermark_holder(engine), as_json)
        return
    adopt_prefect_failures(engine, limit)  # runs that failed before reaching the database
    rows = recent_runs(engine, limit, status)
    ui = _ui_url()
    for row in rows:
        row["cause"] = cause_of(row["status"], row["error"])
        run_id = row["flow_run_id"]
        row["url"] = f"{ui}/runs/flow-run/{run_id}" if ui and run_id else None
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    console = Console()
    table = Table(title="recent runs (newest first)")
    for column in ("kind", "started", "status", "figures / error", "flow run"):
        table.add_column(column, overflow="fold")
    for row in rows:
        contained = row["figures"].pop("contained", None) or []
        detail = _figures(row["figures"])
        if contained:  # units that failed alone (the others completed): step, unit, error
            detail += "".join(
                f"\ncontained: {f['step']} {f['unit']} {f['external_id'] or f['id']}"
                f"{' (withheld)' if f.get('withheld') else ''}: {f['error']}"
                for f in contained)
        if row["error"]:
            detail = f"[red]{row['error']}[/red]" + (f"\n{detail}" if detail else "")
        kind = row["kind"] if not row["parent_flow_run_id"] else f"  {row['kind']} (child)"
        shown = _status(row["status"])
        if row["cause"] != row["status"]:  # database unreachable, deadline, no liveness
            shown += f"\n({row['cause']})"
        table.add_row(kind, _short_time(row["started_at"]), shown, detail,
                      row["url"] or row["flow_run_id"] or "")
    console.print(table)
    if not ui:
        console.print("Set PREFECT_API_URL (a running `prefect server start`) to get links to "
                      "each run's page and artifacts in the Prefect UI.")


def _status(status: str) -> str:
    colour = {"completed": "green", "failed": "red", "crashed": "red", "cancelled": "yellow"}
    return f"[{colour[status]}]{status}[/{colour[status]}]" if status in colour else status


def _print_failed_objects(rows: list[dict[str, Any]], holder: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"failed": rows,
                               "watermark_holder": holder.as_dict() if holder else None},
                              default=str))
        return
    console = Console()
    if holder is None:
        console.print("ingest watermark: every listed object is loaded")
    else:
        where = (f"held at {_short_time(holder.since)} UTC" if holder.holds
                 else f"at {_short_time(holder.watermark)} UTC (the last listing)")
        colour = "red" if holder.dead or holder.status == "failed" else "yellow"
        console.print(f"ingest watermark {where}; oldest object not loaded:"
                      f" [{colour}]{holder.describe()}[/{colour}]", soft_wrap=True)
    table = Table(title=f"objects that failed to load: {len(rows)} (the next run retries them)")
    for column in ("object", "reason", "attempts", "last attempt"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["object"], row["error"] or "", str(row["attempts"]),
                      _short_time(row["last_attempt_at"]))
    console.print(table)
    if rows:
        console.print("Fix or replace the object; the next ingest of its source retries it.")


def _ui_url() -> str | None:
    """The Prefect UI's address: the configured server's, else the local one Tallyflow runs."""
    from tallyflow.flows.links import ui_url

    ui = ui_url()
    if not ui:
        from tallyflow.infra import prefect_server

        managed = prefect_server.running()
        ui = managed["ui_url"] if managed else None
    return ui or None


def _short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())
