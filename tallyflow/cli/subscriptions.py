"""``tallyflow subscriptions``: where a subscription stands, and terminating one.

- ``show EXTERNAL_ID [--at T] [--json]``: status (pending, active, terminated), start, end and
  the events its dates leave unbillable;
- ``terminate EXTERNAL_ID [--at T] [--skip-invoice] [--json]``: Lago's termination (usage after
  T unbillable, wallet corrected, final snapshot, termination invoice). Rerunning the same
  termination (same ``--at``) finishes one that was interrupted.
- ``change-plan EXTERNAL_ID PLAN [--at T] [--json]``: Lago's upgrade (at once) or downgrade (at
  the period end).
- ``lifetime-usage EXTERNAL_ID [--historical CENTS] [--json]``: Lago's lifetime usage and its
  usage thresholds' progress; ``--historical`` sets the usage before Tallyflow (the API's PUT).
- ``bill-thresholds [EXTERNAL_ID...]``: issue the progressive invoices of the thresholds crossed
  now (the deliver-webhooks flow does it every minute; docs/progressive-billing.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer

from tallyflow.cli.common import parse_moment
from tallyflow.errors import UserError
from tallyflow.infra.resources import billing_engine

app = typer.Typer(help="Subscription lifecycle: status, termination, plan changes.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="subscriptions")


@app.command("show")
def show(
    subscription: str = typer.Argument(..., help="External subscription id."),
    at: str | None = typer.Option(None, "--at", help="Status as of (default: now)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Status, dates and the events its dates leave unbillable."""
    from tallyflow.tasks.subscriptions import subscription_standing

    standing = subscription_standing(billing_engine(), subscription,
                                     parse_moment(at) or datetime.now(UTC)).as_dict()
    if as_json:
        typer.echo(json.dumps(standing, indent=2))
        return
    ends = standing["terminated_at"] or "-"
    typer.echo(f"{subscription}: {standing['status']} (from {standing['subscription_at']},"
               f" ends {ends})")
    typer.echo(f"unbillable events: {standing['unbillable_events_before_start']} before the"
               f" start, {standing['unbillable_events_after_end']} after the end")


@app.command("terminate")
def terminate(
    subscription: str = typer.Argument(..., help="External subscription id."),
    at: str | None = typer.Option(
        None, "--at", help="When it ends (ISO time with offset or epoch; default: now). Not "
                           "before the end of its last finalized period."),
    skip_invoice: bool = typer.Option(
        False, "--skip-invoice",
        help="Do not invoice the partial period (Lago's on_termination_invoice=skip)."),
    credit_note: str | None = typer.Option(
        None, "--on-termination-credit-note",
        help="A plan paid in advance: credit (the default, as Lago), refund, offset or skip "
             "the unused days."),
    as_json: bool = typer.Option(False, "--json", help="Print what it did as JSON."),
) -> None:
    """Terminate a subscription: usage after it is unbillable, a termination invoice is issued.
    One that has not started yet is canceled (Lago's cancel of a pending subscription)."""
    from tallyflow.tasks.subscriptions import terminate_subscription

    done = terminate_subscription(billing_engine(), subscription, parse_moment(at),
                                  on_termination_invoice="skip" if skip_invoice else None,
                                  on_termination_credit_note=credit_note)
    out = done.as_dict()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if done.status == "canceled":
        typer.echo(f"{subscription} canceled at {out['terminated_at']}: it had not started, so "
                   f"it never bills (its events stay unbillable) and no invoice is issued")
        return
    again = " (rerun: follow-up steps only)" if done.rerun else ""
    typer.echo(f"{subscription} terminated at {out['terminated_at']}{again}; status "
               f"{out['status']}")
    typer.echo(f"usage state rebuilt from {done.events_refolded} event(s); wallet: "
               f"{out['wallet_deducted_cents']} cents deducted, "
               f"{out['wallet_credited_back_cents']} cents credited back")
    if done.advance_fee_not_credited:
        typer.echo("the plan is paid in advance: the fee billed at the period's start is not"
                   " credited back (on_termination_credit_note skip, or nothing left to credit)")
    _credit_note(done.credit_note)
    if done.on_termination_invoice == "skip":
        typer.echo("no termination invoice (on_termination_invoice: skip)")
    elif not done.invoices:
        typer.echo("termination invoice: issued by the first billing cycle after the end")
    for invoice in done.invoices:
        typer.echo(f"termination invoice: {invoice['number'] or '(draft)'} {invoice['status']},"
                   f" {invoice['total_amount_cents']} {invoice['currency']} cents"
                   f" ({invoice['from_datetime']} to {invoice['to_datetime']})")


@app.command("change-plan")
def change_plan(
    subscription: str = typer.Argument(..., help="External subscription id."),
    plan: str = typer.Argument(..., help="Code of the new plan."),
    at: str | None = typer.Option(
        None, "--at", help="When it is asked for (ISO time with offset or epoch; default: now)."),
    credit_note: str | None = typer.Option(
        None, "--on-termination-credit-note",
        help="An upgrade from a plan paid in advance: credit its unused days (credit, the "
             "default as Lago, or skip)."),
    as_json: bool = typer.Option(False, "--json", help="Print what it did as JSON."),
) -> None:
    """Upgrade (at once) or downgrade (at the period end) a subscription, as Lago does."""
    from tallyflow.tasks.subscriptions import change_plan as change

    done = change(billing_engine(), subscription, plan, parse_moment(at),
                  on_termination_credit_note=credit_note)
    out = done.as_dict()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{subscription}: {done.kind} from {done.previous_plan_code} to {done.plan_code},"
               f" effective {out['effective_at']}")
    if done.advance_fee_not_credited:
        typer.echo("the previous plan is paid in advance: its fee for the period is not"
                   " credited back (on_termination_credit_note skip, or nothing left to credit)")
    _credit_note(done.credit_note)
    for invoice in done.previous_invoice:
        typer.echo(f"previous plan's invoice: {invoice['number'] or '(draft)'}"
                   f" {invoice['status']}, {invoice['total_amount_cents']}"
                   f" {invoice['currency']} cents")


def _credit_note(note: dict[str, Any] | None) -> None:
    if note is not None:
        typer.echo(f"credit note {note['number']}: {note['total_amount_cents']}"
                   f" {note['currency']} cents for the unused days (credit"
                   f" {note['credit_amount_cents']}, refund {note['refund_amount_cents']})")


@app.command("lifetime-usage")
def lifetime_usage(
    subscription: str = typer.Argument(..., help="External subscription id."),
    historical: int | None = typer.Option(
        None, "--historical", min=0,
        help="Set the usage before Tallyflow (cents; Lago's external_historical_usage_amount"
             "_cents)."),
    as_json: bool = typer.Option(False, "--json", help="Print Lago's lifetime_usage object."),
) -> None:
    """Lifetime usage (historical + invoiced + current) and the usage thresholds' progress."""
    from tallyflow.tasks.invoicing import lifetime_usage as read
    from tallyflow.tasks.invoicing import set_historical_usage

    now = datetime.now(UTC)
    try:
        usage = (read(billing_engine(), subscription, now) if historical is None
                 else set_historical_usage(billing_engine(), subscription, historical, now))
    except LookupError:
        raise UserError(f"unknown subscription {subscription!r}",
                        "see `tallyflow catalog export` for the subscriptions") from None
    if as_json:
        typer.echo(json.dumps({"lifetime_usage": usage}, indent=2))
        return
    total = (usage["external_historical_usage_amount_cents"]
             + usage["invoiced_usage_amount_cents"] + usage["current_usage_amount_cents"])
    typer.echo(f"{subscription}: lifetime usage {total} cents (historical"
               f" {usage['external_historical_usage_amount_cents']}, invoiced"
               f" {usage['invoiced_usage_amount_cents']}, current"
               f" {usage['current_usage_amount_cents']})")
    for step in usage.get("usage_thresholds", []):
        reached = f"reached {step['reached_at']}" if step["reached_at"] else \
            f"{step['completion_ratio']:.0%}"
        typer.echo(f"  threshold {step['amount_cents']}: {reached}")


@app.command("bill-thresholds")
def bill_thresholds(
    subscriptions: list[str] | None = typer.Argument(None, help="Only these."),
) -> None:
    """Issue the progressive invoices of the usage thresholds crossed now."""
    from tallyflow.tasks.invoicing import bill_all_thresholds

    run = bill_all_thresholds(billing_engine(), datetime.now(UTC), subscriptions or None)
    typer.echo(f"{run.subscriptions} subscription(s) evaluated, {len(run.issued)} progressive"
               f" invoice(s) issued, {len(run.failed)} failed")
    for issued in run.issued:
        typer.echo(f"{issued.external_subscription_id}: invoice {issued.number}, thresholds"
                   f" {[t.amount_cents for t in issued.thresholds]}, total"
                   f" {issued.total_amount_cents} cents")
    for sub, error in run.failed:
        typer.echo(f"{sub}: {error}", err=True)
    if run.failed:
        raise typer.Exit(1)
