"""``tallyflow db ...``: the database Tallyflow uses, and its schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tallyflow.infra import db, migrate
from tallyflow.infra.settings import configured_database_url

app = typer.Typer(help="Database: status, schema upgrade, embedded server.", no_args_is_help=True)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Which database is in use, whether the embedded server runs, and the schema revision."""
    configured = configured_database_url()
    info: dict[str, object] = {"mode": "url" if configured else "embedded"}
    if configured:
        info["url"] = db.make_url(db.normalise_url(configured)).render_as_string(
            hide_password=True
        )
    else:
        info.update(db.embedded_status())
    if configured or info.get("running"):
        engine = db.get_engine()
        info["revision"] = migrate.current_revision(engine)
        info["head"] = migrate.head_revision()
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        typer.echo(f"{key:>9}: {value}")


@app.command()
def upgrade() -> None:
    """Apply pending schema migrations (other commands do this themselves when needed)."""
    engine = db.get_engine()
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    typer.echo(f"schema: {before or 'empty'} -> {migrate.current_revision(engine)}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server (its data stays under TALLYFLOW_HOME)."""
    if configured_database_url():
        typer.echo("TALLYFLOW_DATABASE_URL is set: there is no embedded server to stop.")
        return
    typer.echo("stopped" if db.stop_embedded() else "the embedded server was not running")


@app.command()
def backup(
    file: Path = typer.Argument(..., help="Where to write the backup (pg_dump custom format)."),
) -> None:
    """Back up the whole Tallyflow database (embedded or not) to FILE."""
    try:
        written = db.backup(file)
    except db.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backup written: {written} ({written.stat().st_size:,} bytes)")


@app.command()
def restore(
    file: Path = typer.Argument(..., help="A file written by `tallyflow db backup`."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask: replace the database's contents."),
) -> None:
    """Replace the Tallyflow database's contents with FILE, in one transaction."""
    configured = configured_database_url()
    where = (db.make_url(db.normalise_url(configured)).render_as_string(hide_password=True)
             if configured else "the embedded database")
    if not yes:
        if not sys.stdin.isatty():
            typer.echo(f"error: restore replaces everything in {where}; pass --yes to confirm",
                       err=True)
            raise typer.Exit(2)
        typer.confirm(f"Replace everything in {where} with {file}?", abort=True)
    try:
        db.restore(file)
    except db.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    engine = db.get_engine()
    typer.echo(f"restored {file} into {where} (schema revision "
               f"{migrate.current_revision(engine)})")
