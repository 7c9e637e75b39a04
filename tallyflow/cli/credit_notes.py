"""``tallyflow credit-notes``: Lago's credit notes on finalized invoices (docs/credit-notes.md).

- ``create INVOICE --item FEE:CENTS ... [--credit C] [--refund R] [--offset O] [--reason R]
  [--description D] [--idempotency-key K] [--json]`` issues one (FEE: the fee's lago_id, as
  ``tallyflow invoices show --json`` prints it; the three amounts must add up to the items and
  their taxes, as ``estimate`` says);
- ``estimate INVOICE --item FEE:CENTS ... [--json]``: the most creditable and refundable;
- ``list [--customer ID] [--invoice ID] [--json]``, ``show KEY [--json]``;
- ``void KEY``: voids the credit left;
- ``html KEY -o FILE``, ``pdf KEY -o FILE``: its document (PDF needs the ``pdf`` extra).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import typer

from tallyflow.cli.common import write_document
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.money import money

app = typer.Typer(help="Credit notes: credit, refund or offset part of a finalized invoice.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="credit-notes")


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _items(items: list[str]) -> tuple[tuple[str, Decimal], ...]:
    out = []
    for text in items:
        fee, _, cents = text.rpartition(":")
        try:
            amount = Decimal(cents)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not fee or not amount.is_finite():
            raise typer.BadParameter(f"{text!r}: give FEE_LAGO_ID:CENTS", param_hint="--item")
        out.append((fee, amount))
    return tuple(out)


def _refused(exc: Exception) -> None:
    errors = getattr(exc, "errors", {})
    _fail("refused: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


def _print(note: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"credit_note": note}, indent=2))
        return
    cur = note["currency"]
    typer.echo(f"Credit note {note['number']} on invoice {note['invoice_number']}, issued "
               f"{note['issuing_date']}, {note['reason']}: total "
               f"{money(note['total_amount_cents'], cur)} (taxes "
               f"{money(note['taxes_amount_cents'], cur)})")
    typer.echo(f"  credit {money(note['credit_amount_cents'], cur)} ({note['credit_status']},"
               f" balance {money(note['balance_amount_cents'], cur)}), refund "
               f"{money(note['refund_amount_cents'], cur)}"
               f" ({note['refund_status'] or 'none'}; to wallets "
               f"{money(note['wallet_refund_amount_cents'], cur)}), offset "
               f"{money(note['offset_amount_cents'], cur)}")


ITEM = typer.Option(..., "--item", help="FEE_LAGO_ID:CENTS (repeat for several fees).")


@app.command("create")
def create(
    invoice: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    item: list[str] = ITEM,
    credit: int = typer.Option(0, "--credit", min=0, help="Cents to the credit balance."),
    refund: int = typer.Option(0, "--refund", min=0, help="Cents refunded."),
    offset: int = typer.Option(0, "--offset", min=0, help="Cents off the invoice's due."),
    reason: str = typer.Option("other", "--reason", help="Lago's reason."),
    description: str | None = typer.Option(None, "--description"),
    key: str | None = typer.Option(None, "--idempotency-key",
                                   help="Retrying with the same key issues nothing new."),
    as_json: bool = typer.Option(False, "--json", help='Lago\'s {"credit_note": {...}}.'),
) -> None:
    """Issue a credit note on a finalized invoice."""
    from tallyflow.models.credit_notes import Request
    from tallyflow.tasks.corrections import CreditNoteRefused, Issue, issue_credit_note

    request = Request(_items(item), credit, refund, offset, reason)
    try:
        note = issue_credit_note(billing_engine(), Issue(invoice, request, description, key))
    except CreditNoteRefused as exc:
        _refused(exc)
        return
    _print(note, as_json)


@app.command("estimate")
def estimate(
    invoice: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    item: list[str] = ITEM,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The most a credit note on these items may credit and refund (nothing is written)."""
    from tallyflow.tasks.corrections import CreditNoteRefused, estimate_credit_note

    try:
        result = estimate_credit_note(billing_engine(), invoice, _items(item))
    except CreditNoteRefused as exc:
        _refused(exc)
        return
    if as_json:
        typer.echo(json.dumps({"estimated_credit_note": result}, indent=2))
        return
    cur = result["currency"]
    typer.echo(f"at most {money(result['max_creditable_amount_cents'], cur)} creditable, "
               f"{money(result['max_refundable_amount_cents'], cur)} refundable (taxes "
               f"{money(result['taxes_amount_cents'], cur)})")


@app.command("list")
def list_(
    customer: str | None = typer.Option(None, "--customer", help="Customer external id."),
    invoice: str | None = typer.Option(None, "--invoice", help="Invoice number or lago_id."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Credit notes, newest first."""
    from tallyflow.tasks.corrections import list_credit_notes

    notes = list_credit_notes(billing_engine(), customer=customer, invoice=invoice)
    if as_json:
        typer.echo(json.dumps({"credit_notes": notes}, indent=2))
        return
    for note in notes:
        typer.echo(f"{note['number']}  {note['issuing_date']}  "
                   f"{money(note['total_amount_cents'], note['currency'])}  "
                   f"{note['credit_status']}  balance "
                   f"{money(note['balance_amount_cents'], note['currency'])}")


@app.command("show")
def show(key: str = typer.Argument(..., help="Number, lago_id or id."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One credit note."""
    from tallyflow.tasks.corrections import find_credit_note

    note = find_credit_note(billing_engine(), key)
    if note is None:
        _fail(f"no credit note {key!r} (hint: `tallyflow credit-notes list`)")
        return
    _print(note, as_json)


@app.command("void")
def void(key: str = typer.Argument(..., help="Number, lago_id or id."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Void the credit left on a note (what was refunded or offset stays so)."""
    from tallyflow.tasks.corrections import CreditNoteRefused, void_credit_note

    try:
        note = void_credit_note(billing_engine(), key)
    except CreditNoteRefused as exc:
        _refused(exc)
        return
    _print(note, as_json)


def _document(key: str, output: Path, kind: str) -> None:
    from tallyflow.tasks.corrections import credit_note_document

    write_document(lambda: credit_note_document(billing_engine(), key, kind), output,
                   f"no credit note {key!r} (hint: `tallyflow credit-notes list`)")


@app.command("html")
def html(key: str = typer.Argument(..., help="Number, lago_id or id."),
         output: Path = typer.Option(..., "--output", "-o")) -> None:
    """The credit note's document, kept as issued."""
    _document(key, output, "html")


@app.command("pdf")
def pdf(key: str = typer.Argument(..., help="Number, lago_id or id."),
        output: Path = typer.Option(..., "--output", "-o")) -> None:
    """The credit note's PDF, rendered from its kept document (needs the ``pdf`` extra)."""
    _document(key, output, "pdf")
