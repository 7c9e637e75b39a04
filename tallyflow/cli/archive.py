"""``tallyflow archive``: events of finalized periods, and whole months of their usage
snapshots, to Parquet files, out of PostgreSQL.

The rule (which history may leave) is in models/archive.py, the exactly-once moves in
tasks/archive/events.py (events) and tasks/archive/snapshots.py (snapshot months: a partition swap).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tallyflow.cli.common import parse_moment
from tallyflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("archive")(archive)


def archive(
    before: str = typer.Option(..., "--before", help="Archive events before this time (ISO "
                               "with offset or epoch); their periods must be finalized."),
    to: str = typer.Option(..., "--to", help="Where the Parquet files go: a folder, "
                           "s3://bucket/prefix or another fsspec URL."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url",
                                            help="S3-compatible endpoint"),
    as_json: bool = typer.Option(False, "--json", help="Print what it did as JSON."),
) -> None:
    """Move the events before --before, and the usage snapshots of every month wholly before
    it (but the last of each period), to Parquet files (exactly once), keeping usage state,
    invoices and wallets; later events before it are refused at ingest."""
    from tallyflow.infra.resources import billing_engine
    from tallyflow.tasks.archive import archive_events, archive_snapshots
    from tallyflow.tasks.ingest import FsspecSource, SourceSpec

    moment = parse_moment(before)
    if moment is None:  # pragma: no cover - typer requires the option
        raise UserError("--before is required", "e.g. --before 2026-01-01T00:00:00Z")
    if "://" not in to:
        folder = Path(to).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        to = folder.as_uri()
    options = {"endpoint_url": endpoint_url} if endpoint_url else {}
    source = FsspecSource(SourceSpec(kind="fsspec", url=to, options=options))
    fs, root = source.filesystem()
    engine = billing_engine()
    done = archive_events(engine, moment, fs, root)
    months = archive_snapshots(engine, moment, fs, root)
    if as_json:
        typer.echo(json.dumps({**done.as_dict(), "snapshots": months.as_dict()}, indent=2))
        return
    typer.echo(f"archived {done.rows} event(s) before {done.before.isoformat()} into "
               f"{len(done.files)} file(s) under {to}")
    for url in done.files:
        typer.echo(f"  {url}")
    typer.echo(f"archived {months.rows} usage snapshot(s) of {len(months.months)} month(s)"
               f"{' (' + ', '.join(months.months) + ')' if months.months else ''} into "
               f"{len(months.files)} file(s), kept {months.kept} still in use")
    for url in months.files:
        typer.echo(f"  {url}")
    if done.finished_moves or done.removed_temporary:
        typer.echo(f"finished an interrupted run: {done.finished_moves} file(s) moved, "
                   f"{done.removed_temporary} unrecorded temporary file(s) removed")
