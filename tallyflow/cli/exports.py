"""``tallyflow export``: usage by charge, wallet transactions, invoices and events as CSV or
Parquet, one fixed schema per export (docs/operations.md, "Exporting history").

For data engineers who want the history in a notebook or a warehouse: the same numbers the
other commands print, with money as exact decimals (never float). The events and event-voids
exports are incremental: ``--since`` the watermark the previous run printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tallyflow.cli.common import parse_moment
from tallyflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    what: str = typer.Argument(
        ..., help="usage | wallet-transactions | invoices | events | event-voids"),
    file: Path | None = typer.Argument(None, help="File to write: .csv or .parquet."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="File to write (instead of FILE)."),
    customer: str | None = typer.Option(None, "--customer", help="External customer id."),
    subscription: str | None = typer.Option(
        None, "--subscription", help="External subscription id."
    ),
    since: str | None = typer.Option(
        None, "--since", help="From this time (ISO or epoch); for events and event-voids: the "
        "watermark the last such export printed."),
    until: str | None = typer.Option(None, "--until", help="Before this time (ISO or epoch)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write one history to a CSV or Parquet file of a fixed schema (money as exact
    decimals); the events and event-voids exports print the watermark for the next --since."""
    from tallyflow.infra.resources import billing_engine
    from tallyflow.tasks.exports import INCREMENTAL, Filters
    from tallyflow.tasks.exports import export as write

    if (file is None) == (output is None):
        raise UserError("name one file to write", hint="tallyflow export usage usage.parquet "
                        "(or -o usage.parquet)", exit_code=2)
    path = file if file is not None else output
    assert path is not None
    if what in INCREMENTAL:
        if since is not None and not since.strip().isdigit():
            raise UserError(f"--since {since!r} is not a watermark",
                            hint=f"the {what} export takes the number the last one printed "
                                 "(0, or no --since, for every event)", exit_code=2)
        filters = Filters(customer, subscription, None, parse_moment(until),
                          int(since) if since is not None else None)
    else:
        filters = Filters(customer, subscription, parse_moment(since), parse_moment(until))
    done = write(billing_engine(), what, path, filters)
    if as_json:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    typer.echo(f"wrote {done.rows} row(s) of {what} to {path}")
    if done.watermark is not None:
        typer.echo(f"watermark: {done.watermark} (next time: --since {done.watermark})")
