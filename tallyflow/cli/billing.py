"""``tallyflow billing run``: bill an hour now, the way the hourly ``billing-cycle`` deployment
does (usage snapshot, wallet deductions, charges paid in advance, period close).

It runs the deployment's own flows, in the Prefect server every command uses, so billing by
hand, in a script or from cron without Prefect deployments bills exactly what the schedule
would, charges paid in advance included (issue 31).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.cli.common import flow_session, parse_moment
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.summaries import BillingCycleSummary

# Prefect's form for the backfill allows this many hours (flows/params.py); the same bound here.
MAX_HOURS = 92 * 24


def register(app: typer.Typer) -> None:
    billing = typer.Typer(help="The billing cycle: bill an hour, or hours in order, now.",
                          no_args_is_help=True)
    billing.command("run")(run)
    app.add_typer(billing, name="billing")


def billing_hour(value: str | None, now: datetime) -> datetime:
    """The hour ``--at`` names: an ISO time on the hour (or epoch seconds), default the hour
    that began last. A time inside an hour is refused, naming the hour it would mean: billing
    10:00 and 10:30 are not the same thing, and guessing would bill a different hour than
    the one asked for."""
    moment = parse_moment(value)
    if moment is None:
        return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    moment = moment.astimezone(UTC)  # hours are UTC hours: 10:00+05:30 is 04:30Z, not an hour
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if moment != hour:
        label = hour.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise typer.BadParameter(f"{value!r} is not on the hour; the hour it falls in is "
                                 f"{label} (--at {label})", param_hint="--at")
    return hour


def run(
    at: str | None = typer.Option(
        None, "--at", help="The hour to bill, on the hour, with its offset (e.g. "
        "2026-11-27T10:00:00Z) or epoch seconds. Default: the hour that began last."),
    hours: int = typer.Option(
        1, "--hours", min=1, max=MAX_HOURS,
        help="Bill this many consecutive hours from --at on, oldest first (the backfill)."),
    as_json: bool = typer.Option(False, "--json", help="Print each hour's summary as JSON."),
) -> None:
    """Bill an hour now with the billing-cycle deployment's own flow (--hours N: the backfill).

    Usage snapshot, wallet deductions, charges paid in advance and period close, with the
    flow's retries; rerunning an hour bills nothing twice.
    """
    hour = billing_hour(at, datetime.now(UTC))
    billing_engine()
    with flow_session():
        from tallyflow.flows.billing import billing_backfill, billing_cycle

        if hours == 1:
            results = [billing_cycle(hour=hour)]
        else:
            results = billing_backfill(start=hour, hours=hours)["results"]
    if as_json:
        typer.echo(json.dumps(results if hours > 1 else results[0], default=str))
        return
    Console().print(summary_table(results))


def summary_table(results: Sequence[BillingCycleSummary]) -> Table:
    """One line per hour, what a person checks after billing, narrow enough for 80 columns."""
    table = Table(title="billing cycle (amounts in cents)")
    columns = ("hour (UTC)", "subscriptions", "usage", "deducted", "advance", "finalized")
    for column in columns:
        table.add_column(column, justify="left" if column == "hour (UTC)" else "right",
                         no_wrap=True)
    for result in results:
        usage, wallets = result["usage"], result["wallets"]
        advance, invoices = result["advance"], result["invoices"]
        table.add_row(
            datetime.fromisoformat(result["hour"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            str(usage.get("subscriptions_as_of", 0)),
            _plain(usage.get("amount_cents_as_of", 0)),
            _plain(wallets.get("amount_cents_deducted", 0)),
            _plain(advance.get("amount_cents", 0)),
            str(invoices.get("finalized", 0)),
        )
    table.caption = ("usage: the periods' amount as of the hour; deducted: from wallets; "
                     "advance: charges paid in advance; finalized: invoices (--json: all)")
    return table


def _plain(value: Any) -> str:
    number = Decimal(str(value))
    return format(number.normalize(), "f") if number else "0"
