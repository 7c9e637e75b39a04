"""``tallyflow demo``: apply the Mistral catalog, ingest a few days of traffic, show the result."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from tallyflow import demo
from tallyflow.resources import billing_engine


def register(app: typer.Typer) -> None:
    app.command("demo")(run_demo)


def run_demo(days: int = typer.Option(3, min=1, max=31, help="Days of traffic to write.")) -> None:
    """Run the Mistral scenario on this machine: no server, no cloud."""
    from tallyflow.commands.ingest import run_ingest
    from tasks.catalog import apply_catalog

    console = Console()
    started = time.perf_counter()
    engine = billing_engine()
    console.print(f"[bold]1. Catalog[/bold] from {demo.EXAMPLES}")
    applied = apply_catalog(engine, [demo.EXAMPLES])
    if not applied.ok:
        for error in applied.errors:
            console.print(f"[red]{error}[/red]")
        raise typer.Exit(1)
    console.print(_price_table(engine))
    bucket = demo.demo_bucket()
    objects = demo.write_traffic(bucket, datetime.now(UTC).date(), days)
    console.print(f"[bold]2. Traffic[/bold]: {len(objects)} object(s) in {bucket}")
    summary, ok = run_ingest(bucket.as_uri(), progress=True)
    console.print(
        f"[bold]3. Ingest[/bold]: {summary['objects']} new object(s), "
        f"{summary['accepted']} events accepted, {summary['duplicates']} duplicates, "
        f"{summary['rejected']} rejected (see `tallyflow rejects`), "
        f"{summary['unbillable']} unbillable"
    )
    console.print(f"Done in {time.perf_counter() - started:.1f} s.")
    if not ok:
        raise typer.Exit(1)


def _price_table(engine) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title="Mistral per-token prices (USD per 1M tokens, package model)")
    for column in ("plan", "model", "type", "price"):
        table.add_column(column, justify="right" if column == "price" else "left")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                select p.code, f.values, f.properties
                from charge_filters f join charges c on c.id = f.charge_id
                join plans p on p.id = c.plan_id order by p.code, f.position
                """
            )
        ).all()
    for plan, values, properties in rows:
        per_package = Decimal(str(properties.get("amount", "0")))
        size = Decimal(str(properties.get("package_size", 1)))
        price = per_package * Decimal(1_000_000) / size
        table.add_row(
            plan,
            ", ".join(values.get("model", [])),
            ", ".join(values.get("type", [])),
            f"${price.normalize():f}",
        )
    return table
