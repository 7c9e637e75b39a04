"""``tallyflow export``: usage, wallet and invoice history as CSV or Parquet (pandas).

For data engineers who want the history in a notebook or a warehouse: the same numbers the
other commands print, with money as exact decimals (never float).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tallyflow.cli.common import parse_moment


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    what: str = typer.Argument(..., help="usage | wallet-transactions | invoices"),
    output: Path = typer.Option(..., "--output", "-o", help="File to write: .csv or .parquet."),
    customer: str | None = typer.Option(None, "--customer", help="External customer id."),
    subscription: str | None = typer.Option(
        None, "--subscription", help="External subscription id."
    ),
    since: str | None = typer.Option(None, "--since", help="From this time (ISO or epoch)."),
    until: str | None = typer.Option(None, "--until", help="Before this time (ISO or epoch)."),
) -> None:
    """Write one history to a CSV or Parquet file (money as exact decimals)."""
    from tallyflow.infra.resources import billing_engine
    from tallyflow.tasks.exports import Filters
    from tallyflow.tasks.exports import export as write

    filters = Filters(customer, subscription, parse_moment(since), parse_moment(until))
    rows = write(billing_engine(), what, output, filters)
    typer.echo(f"wrote {rows} row(s) of {what} to {output}")
