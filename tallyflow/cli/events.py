"""``tallyflow events``: void a wrong event (with an audit trail) and say where one stands.

- ``void --subscription S --transaction-id T [--transaction-id T2 ...] --reason TEXT``, or
  ``void --object URL [--rows 1-5,9] --reason TEXT`` for a bad batch: the events stay stored,
  marked voided by the OS user with the time and reason; their periods are re-rated and the
  wallet corrected at once (``tallyflow.tasks.corrections``). Refused keys are listed with their
  reason and the command exits 1; the others are voided all the same.
- ``show --subscription S --transaction-id T [--json]``: status, object, row, ingest time and
  the void history.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import TYPE_CHECKING

import typer

from tallyflow.cli.common import parse_moment
from tallyflow.infra.resources import billing_engine

if TYPE_CHECKING:
    from tallyflow.models.lago.summaries import VoidSummary

app = typer.Typer(help="Events: void a wrong one (audit trail, re-rated at once), show one.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="events")


def os_user() -> str:
    """Who voids from the command line: the OS user (``getpass`` reads LOGNAME, USER...)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"uid:{os.getuid()}"


@app.command("void")
def void(
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit trail)."),
    subscription: str | None = typer.Option(
        None, "--subscription", help="External subscription id of the event(s)."),
    transaction_ids: list[str] | None = typer.Option(
        None, "--transaction-id", help="Transaction id; repeat for several."),
    object_url: str | None = typer.Option(
        None, "--object", help="Instead: the events an ingested object's rows produced."),
    rows: str | None = typer.Option(
        None, "--rows", help="With --object: only these rows, e.g. 1-5,9 (first row is 1)."),
    at: str | None = typer.Option(
        None, "--at", help="The void's moment (ISO time with offset; default: now)."),
    as_json: bool = typer.Option(False, "--json", help="Print what it did as JSON."),
) -> None:
    """Void events: kept stored and marked, counted nowhere; usage and the wallet re-rated now.
    Refused for events on a finalized invoice, billed in advance or archived."""
    from tallyflow.models.voids import parse_rows
    from tallyflow.tasks.corrections import EventKey, VoidError, keys_of_object, void_and_rerate

    engine = billing_engine()
    if object_url is not None:
        if subscription or transaction_ids:
            raise VoidError("give either --object or --subscription with --transaction-id",
                            "one selection per void", exit_code=2)
        try:
            ranges = parse_rows(rows) if rows is not None else None
        except ValueError as exc:
            raise VoidError(f"--rows {exc}", "e.g. --rows 1-5,9", exit_code=2) from None
        keys = keys_of_object(engine, object_url, ranges)
        if not keys:
            raise VoidError(f"no stored event came from {object_url!r}"
                            + (f" rows {rows}" if rows else ""),
                            "`tallyflow rejects --object` lists its refused rows")
    else:
        if rows is not None:
            raise VoidError("--rows goes with --object", "e.g. --object URL --rows 1-5",
                            exit_code=2)
        if not subscription or not transaction_ids:
            raise VoidError("say which events: --subscription with --transaction-id, or"
                            " --object", 'e.g. --subscription S --transaction-id T --reason'
                            ' "sent twice"', exit_code=2)
        keys = [EventKey(subscription, t) for t in transaction_ids]
    done = void_and_rerate(engine, keys, os_user(), reason, parse_moment(at))
    out = done.as_dict()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        _print(out)
    refused = done.refused
    if refused:
        if len(refused) == 1:
            one = refused[0]
            raise VoidError(f"not voided {one.key.external_subscription_id}/"
                            f"{one.key.transaction_id} ({one.outcome}): {one.message}",
                            _hint(str(one.outcome)))
        codes = sorted({str(o.outcome) for o in refused})
        raise VoidError(f"{len(refused)} of {len(done.outcomes)} event(s) not voided"
                        f" ({', '.join(codes)}); each is listed above",
                        _hint(codes[0]) if len(codes) == 1 else
                        "a credit note corrects an invoiced or paid event")


def _hint(code: str) -> str:
    if code == "not_found":
        return "check the subscription and transaction_id (`tallyflow events show`)"
    if code == "archived":
        return "its finalized period is on an invoice; a credit note corrects it"
    return "the billed amount stands; a credit note corrects it (see the adjustments issue)"


def _print(out: VoidSummary) -> None:
    for event in out["events"]:
        name = f"{event['external_subscription_id']}/{event['transaction_id']}"
        if event["outcome"] == "voided":
            typer.echo(f"voided {name} (event time {event['timestamp']}) by {out['actor']}:"
                       f" {out['reason']}")
        elif event["outcome"] == "already_voided":
            typer.echo(f"already voided {name} at {event['voided_at']} (that void stands)")
        else:
            typer.echo(f"refused {name}: {event['outcome']}: {event['message']}")
    rerate = out["rerate"]
    if rerate is not None:
        typer.echo(f"re-rated {len(rerate['periods'])} period(s): {rerate['snapshots']}"
                   f" snapshot(s), {rerate['wallet_corrections']} wallet correction(s),"
                   f" {rerate['credited_back_cents']} cents credited back,"
                   f" {rerate['deducted_cents']} cents deducted")


@app.command("show")
def show(
    subscription: str = typer.Option(..., "--subscription", help="External subscription id."),
    transaction_id: str = typer.Option(..., "--transaction-id", help="Transaction id."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """An event's status (accepted, voided, on_finalized_invoice, billed_in_advance,
    archived), where it came from, and its history."""
    from tallyflow.tasks.corrections import EventKey, event_status

    shown = event_status(billing_engine(), EventKey(subscription, transaction_id))
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(f"{subscription}/{transaction_id}: {shown['status']}")
    if shown["status"] == "archived":
        typer.echo("moved to an archive file with its finalized period (tallyflow archive)")
        return
    typer.echo(f"code {shown['code']}, event time {shown['timestamp']}")
    typer.echo(f"from {shown['object']} row {shown['row']}, ingested {shown['ingested_at']}")
    if shown["invoice"]:
        typer.echo(f"on finalized invoice {shown['invoice']}")
    for item in shown["history"]:
        if item["event"] == "voided":
            typer.echo(f"{item['at']} voided by {item['actor']}: {item['reason']}")
        else:
            typer.echo(f"{item['at']} ingested from {item['object']} row {item['row']}")
