"""``tallyflow demo``: apply the Mistral catalog, ingest a few days of traffic, show the result."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from tallyflow.cli import demo_data as demo
from tallyflow.cli.common import flow_session, parse_moment
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.resources import Invoice
from tallyflow.models.rating.money import format_money


def register(app: typer.Typer) -> None:
    app.command("demo")(run_demo)


def run_demo(
    days: int = typer.Option(3, min=1, max=31, help="Days of traffic to write."),
    now: str | None = typer.Option(
        None, "--now", hidden=True,
        help="The moment the demo takes as now (tests: a run on each side of an hour)."),
) -> None:
    """Run the Mistral scenario on this machine: no server, no cloud."""
    moment = parse_moment(now) or datetime.now(UTC)
    with flow_session(), demo.example_catalogs() as catalogs:
        _run_demo(days, moment, catalogs)


def _run_demo(days: int, now: datetime, catalogs: list[Path]) -> None:
    from tallyflow.cli.ingest import run_ingest
    from tallyflow.cli.usage import usage as usage_command
    from tallyflow.flows.invoices import close_periods_flow
    from tallyflow.flows.usage_snapshot import usage_snapshot
    from tallyflow.flows.wallet_deductions import wallet_deductions
    from tallyflow.tasks.catalog import apply_catalog
    from tallyflow.tasks.wallets import open_wallets, wallet_overview

    console = Console()
    started = time.perf_counter()
    engine = billing_engine()
    console.print("[bold]1. Catalog[/bold] from " + " and ".join(map(str, catalogs)))
    applied = apply_catalog(engine, catalogs)
    if not applied.ok:
        for error in applied.errors:
            console.print(f"[red]{error}[/red]")
        raise typer.Exit(1)
    # Wallets open as the catalog is applied (the demo settles purchased credits too).
    open_wallets(engine, now, settle_paid=True)
    console.print(_price_table(engine))
    bucket = demo.demo_bucket()
    today = now.astimezone(UTC).date()
    objects = demo.write_traffic(bucket, now, days)
    # Some traffic in the last ended periods too, so that the invoices closed at the end show
    # usage: the last day of the previous month (calendar customers) and the 10th of it
    # (inside initech's last ended anniversary period whatever today's date).
    last_month_end = today.replace(day=1) - timedelta(days=1)
    for day in (last_month_end, last_month_end.replace(day=10)):
        objects += demo.write_day(bucket, day, 24)
    console.print(f"[bold]2. Traffic[/bold]: {len(objects)} object(s) in {bucket}")
    summary, ok = run_ingest(bucket.as_uri(), progress=True)
    console.print(
        f"[bold]3. Ingest[/bold]: {summary['objects']} new object(s), "
        f"{summary['accepted']} events accepted, {summary['duplicates']} duplicates, "
        f"{summary['rejected']} rejected (see `tallyflow rejects`), "
        f"{summary['unbillable']} unbillable"
    )
    usage = usage_snapshot(as_of=now)
    console.print(
        f"[bold]4. Usage snapshot[/bold]: {usage['snapshots']} subscription(s) rated, "
        f"{usage['amount_cents']} cents of usage this period"
    )
    wallets = wallet_deductions(as_of=now, settle_paid=True)
    console.print(
        f"[bold]5. Wallet deductions[/bold]: {wallets.get('wallets_touched', 0)} wallet(s), "
        f"{wallets.get('credits_deducted', 0)} credits deducted, "
        f"{wallets.get('alerts', 0)} alert(s)"
    )
    for subscription, customer in demo.SUBSCRIPTION_CUSTOMERS.items():
        console.rule(f"{customer} ({subscription})")
        usage_command(subscription=subscription, at=now.isoformat(), as_json=False, metric=None)
    console.print(_wallet_table(wallet_overview, engine, now))
    closed = close_periods_flow(at=now)
    console.print(
        f"[bold]6. Period close[/bold]: {closed['finalized']} invoice(s) finalized, "
        f"{closed['drafts']} draft(s) (ended periods since each subscription started; "
        "`tallyflow invoices list`)"
    )
    console.print(_invoice_table(engine))
    console.print(f"Done in {time.perf_counter() - started:.1f} s. Run it again: nothing is "
                  "counted twice.")
    console.print(_ui_lines())
    if not ok:
        raise typer.Exit(1)


def _ui_lines() -> str:
    """Where this demo's runs are: the UI of the Prefect server the demo itself used (the
    configured one, or the local server it started or reused), never a fixed port."""
    from tallyflow.infra.prefect_server import addresses

    where = addresses()
    if not where.get("ui_url"):
        return "The runs are recorded in Prefect: `tallyflow status` says where its UI is."
    return (f"See these runs in the Prefect UI: {where['ui_url']}/runs\n"
            "  (`tallyflow status` shows it again; `tallyflow prefect stop` stops the local "
            "server, `tallyflow db stop` the embedded database)")


def _invoice_table(engine: Any) -> Table:
    """The latest finalized invoice of each demo customer."""
    from tallyflow.tasks.invoicing import list_invoices

    table = Table(title="Latest finalized invoice per customer")
    for column in ("number", "customer", "issued", "fees", "prepaid", "due"):
        table.add_column(column, justify="right" if column in (
            "fees", "prepaid", "due") else "left", no_wrap=True)
    latest: dict[str, Invoice] = {}
    for invoice in list_invoices(engine, status="finalized", invoice_type="subscription"):
        latest[invoice["customer"]["external_id"]] = invoice
    for customer, i in sorted(latest.items()):
        money = i["currency"]
        table.add_row(i["number"], customer, i["issuing_date"],
                      format_money(i["fees_amount_cents"], money),
                      format_money(i["prepaid_credit_amount_cents"], money),
                      format_money(i["total_amount_cents"], money))
    return table


def _wallet_table(overview: Any, engine: Any, now: datetime) -> Table:
    """One line per wallet: what a customer asks first (what is left, what was used)."""
    table = Table(title="Prepaid wallets after this period's usage")
    for column in ("customer", "wallet", "credits left", "money left", "consumed credits"):
        table.add_column(column, justify="left" if column in ("customer", "wallet") else "right")
    for customer in sorted(set(demo.SUBSCRIPTION_CUSTOMERS.values())):
        for wallet in overview(engine, customer, now, 0)["wallets"]:
            table.add_row(customer, wallet["name"] or wallet["code"],
                          f"{Decimal(wallet['credits_balance']):.2f}",
                          format_money(wallet["balance_cents"], wallet["currency"]),
                          f"{Decimal(wallet['consumed_credits']):.2f}")
    return table


def _price_table(engine: Engine) -> Table:
    table = Table(title="Mistral per-token prices (USD per 1M tokens, package model)")
    for column in ("plan", "model", "type", "price"):
        table.add_column(column, justify="right" if column == "price" else "left")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                select p.code, f.values, f.properties
                from charge_filters f
                join charges c on c.id = f.charge_id and c.effective_to is null
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
