"""``tallyflow usage`` and ``tallyflow snapshot``: current usage, state rebuild, snapshots.

``tallyflow usage SUB`` prints Lago's ``customer_usage`` for the period containing ``--at``;
``tallyflow usage rebuild [--metric CODE]`` recomputes usage state from raw events (``rebuild``
is a reserved word there, since a command group cannot also take a free argument);
``tallyflow snapshot [--at T]`` runs the hourly flow by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.cli.common import flow_session, parse_moment
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.money import money
from tallyflow.models.lago.resources import CustomerUsage
from tallyflow.models.lago.summaries import FoldFigures

REBUILD = "rebuild"


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
    app.command("snapshot")(snapshot)


def usage(
    subscription: str = typer.Argument(
        ..., help="External subscription id, or 'rebuild' to recompute usage state."
    ),
    at: str | None = typer.Option(None, "--at", help="ISO time with offset or epoch seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print Lago's customer_usage as JSON."),
    metric: str | None = typer.Option(
        None, "--metric", help="With 'rebuild': only this billable metric code."
    ),
) -> None:
    """Current usage of a subscription (every event ingested so far), or rebuild state."""
    engine = billing_engine()
    if subscription == REBUILD:
        from tallyflow.tasks.folding import rebuild_states

        try:
            summary = rebuild_states(engine, metric)
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
        typer.echo(json.dumps(summary.as_dict()) if as_json else _rebuild_text(summary.as_dict()))
        return
    from tallyflow.models.lifecycle import SubscriptionStatus
    from tallyflow.tasks.subscriptions import subscription_standing
    from tallyflow.tasks.usage import current_usage

    moment = parse_moment(at) or datetime.now(UTC)
    standing = subscription_standing(engine, subscription, moment)
    if standing.status is SubscriptionStatus.PENDING:
        # Lago has no current usage before the start; say why, and what is waiting.
        if as_json:
            typer.echo(json.dumps(standing.as_dict(), indent=2))
        else:
            typer.echo(f"{subscription} is pending: it starts at "
                       f"{standing.subscription_at.isoformat()};"
                       f" {standing.unbillable_before_start} event(s) before its start are"
                       f" unbillable (stored and counted, never billed)")
        return
    ended = standing.status is SubscriptionStatus.TERMINATED and at is None
    if ended and standing.ends_at is not None:
        moment = standing.ends_at  # its last period, up to the termination
    try:
        result = current_usage(engine, subscription, moment)
    except (LookupError, ValueError) as exc:
        typer.echo(str(exc).strip("'\""), err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        if ended:
            typer.echo(f"{subscription} is terminated (at {moment.isoformat()}): its last"
                       f" period; {standing.unbillable_after_end} event(s) after the end are"
                       f" unbillable")
        console = Console()
        console.print(_usage_table(result))
        for line in unbillable_lines(result):
            console.print(line, markup=False, highlight=False)


def unbillable_lines(usage: CustomerUsage) -> list[str]:
    """One line per metric and reason with events that bill nothing (docs/data-quality.md,
    "Unbillable events"); none for a clean period."""
    return [
        f"unbillable: {u['billable_metric_code']}: {u['count']} event(s) {u['reason']}"
        f" (e.g. {', '.join(u['sample_transaction_ids'])})"
        for u in usage.get("tallyflow_unbillable", [])
    ]


def _rebuild_text(summary: FoldFigures) -> str:
    return (
        f"rebuilt usage state from {summary['objects']} object(s): {summary['folded']} event(s)"
        f" folded for {summary['subscriptions']} subscription(s),"
        f" {summary['unbillable']} unbillable"
    )


def _usage_table(usage: CustomerUsage) -> Table:
    currency = usage["currency"]
    table = Table(
        title=(
            f"usage of {usage['external_subscription_id']} from {usage['from_datetime']}"
            f" to {usage['to_datetime']}"
        ),
        caption=f"total {money(usage['total_amount_cents'], currency)}"
        f" ({usage['events_count']} events)",
    )
    for column in ("charge", "filter / group", "units", "events", "amount"):
        table.add_column(
            column, justify="left" if column in ("charge", "filter / group") else "right"
        )
    for charge in usage["charges_usage"]:
        name = f"{charge['charge']['invoice_display_name']} [{charge['billable_metric']['code']}]"
        table.add_row(
            f"[bold]{name}[/bold]",
            charge["charge"]["charge_model"],
            charge["units"],
            str(charge["events_count"]),
            f"[bold]{money(charge['amount_cents'], currency)}[/bold]",
        )
        for item in charge["filters"]:
            table.add_row(
                "",
                item["invoice_display_name"] or "(default)",
                item["units"],
                str(item["events_count"]),
                money(item["amount_cents"], currency),
            )
        for group in charge["grouped_usage"]:
            label = ", ".join(f"{k}={v}" for k, v in group["grouped_by"].items())
            table.add_row(
                "",
                label,
                group["units"],
                str(group["events_count"]),
                money(group["amount_cents"], currency),
            )
    return table


def snapshot(
    at: str | None = typer.Option(None, "--at", help="as_of: ISO time with offset or epoch."),
    subscriptions: list[str] = typer.Option(
        [], "--subscription", "-s", help="Recompute only these (always, changed or not)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the usage-snapshot flow now (as_of defaults to the current time)."""
    billing_engine()
    moment = parse_moment(at) or datetime.now(UTC)
    with flow_session():
        from tallyflow.flows.usage_snapshot import usage_snapshot

        summary = usage_snapshot(as_of=moment, subscriptions=subscriptions or None)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    table = Table(title=f"usage snapshot as of {summary['as_of']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("objects folded", str(summary["fold"]["objects"]))
    table.add_row("events folded", str(summary["fold"]["folded"]))
    table.add_row("unbillable events", str(summary["fold"]["unbillable"]))
    for reason in ("not_a_number", "unpriced"):
        table.add_row(f"events {reason}", str(summary.get(reason, 0)))
    table.add_row("subscriptions snapshotted", str(summary["snapshots"]))
    table.add_row("amount (cents)", str(summary["amount_cents"]))
    Console().print(table)
