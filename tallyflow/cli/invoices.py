"""``tallyflow invoices``: close periods by hand, read invoices as Lago's clients do.

- ``close [--at T]`` runs the period-close step of the billing cycle;
- ``list [--customer ID] [--subscription ID] [--status draft|finalized] [--json]`` prints
  ``{"invoices": [...]}`` in Lago's invoice shape (or a table);
- ``show ID|NUMBER [--json]`` prints ``{"invoice": {...}}`` (or a readable invoice);
- ``pdf ID|NUMBER -o FILE`` (and ``html``) writes the document kept at finalization;
- ``pdfs [--max N] [--max-seconds S]`` runs the ``invoice-pdfs`` flow now (it is scheduled
  every 10 minutes when served): the PDFs of finalized invoices that have none yet;
- ``mark-paid|mark-failed ID|NUMBER`` records the payment status of a finalized invoice;
- ``create --customer ID --fee CODE[:UNITS[:UNIT_AMOUNT_CENTS]] | --file BODY.json [--key K]``
  makes a one-off invoice of add-on fees (Lago's ``POST /invoices``): finalized, numbered and
  paid from the wallets at once; a repeat with the same ``--key`` makes nothing more;
- ``late-usage`` lists events that arrived after their period's invoice was finalized;
- ``void ID|NUMBER`` voids a finalized invoice and gives its wallets back what they paid toward
  it; ``regenerate ID|NUMBER`` issues the finalized invoice that replaces a voided one
  (docs/invoices.md, "Void and regenerate");
- ``advance-fees [--subscription ID] [--json]`` lists the per-event fees of charges paid in
  advance (on a ``pay_in_advance`` invoice, or kept off invoices and paid from the wallets).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.cli.common import flow_session, parse_moment, write_document
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.money import money as lago_money

app = typer.Typer(help="Invoices: period close, Lago-shaped listings, documents, late usage.")

STATUSES = ("draft", "finalized", "voided")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="invoices")


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


@app.command("close")
def close(
    at: str | None = typer.Option(None, "--at", help="Close as of: ISO time with offset or "
                                  "epoch seconds (default: now)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Close every billing period that has ended: draft, refresh or finalize its invoice."""
    from datetime import UTC, datetime

    from tallyflow.flows.invoices import close_periods_flow

    billing_engine()
    moment = parse_moment(at) or datetime.now(UTC)
    with flow_session():  # the local Prefect server, not a temporary one in this process
        summary = close_periods_flow(at=moment)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(f"{summary['finalized']} finalized, {summary['drafts']} draft(s) refreshed,"
               f" {summary['late_events']} late event(s), {summary['pdfs_pending']} PDF(s)"
               f" pending (`tallyflow invoices pdfs`); ingest watermark:"
               f" {summary['watermark'] or 'none yet (nothing is finalized before ingestion)'}")
    for invoice in summary["finalized_invoices"]:
        typer.echo(f"  {invoice['number']}  {invoice['customer']}  "
                   f"{lago_money(invoice['total_amount_cents'], invoice['currency'])}")


INVOICE_TYPES = ("subscription", "credit", "pay_in_advance", "advance_charges", "one_off",
                 "progressive_billing")


@app.command("list")
def list_(
    customer: str | None = typer.Option(None, "--customer", help="External customer id."),
    subscription: str | None = typer.Option(None, "--subscription",
                                            help="External subscription id."),
    status: str | None = typer.Option(None, "--status", help="draft, finalized or voided."),
    invoice_type: str | None = typer.Option(
        None, "--type", help="subscription (periods), credit (paid wallet top-ups),"
                             " pay_in_advance (charges paid per event) or advance_charges"
                             " (paid fees regrouped at period end)."),
    as_json: bool = typer.Option(False, "--json", help='Lago\'s {"invoices": [...]}.'),
) -> None:
    """Invoices, oldest first."""
    from tallyflow.tasks.invoicing import list_invoices

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"--status must be draft, finalized or voided; got {status!r}")
    if invoice_type is not None and invoice_type not in INVOICE_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(INVOICE_TYPES)};"
                                 f" got {invoice_type!r}")
    invoices = list_invoices(billing_engine(), customer=customer, subscription=subscription,
                             status=status, invoice_type=invoice_type)
    if as_json:
        typer.echo(json.dumps({"invoices": invoices}, indent=2))
        return
    table = _table("invoices", ("number", "type", "customer", "issuing date", "status"),
                   ("fees", "taxes", "prepaid credits", "total"))
    for i in invoices:
        money = partial(lago_money, currency=i["currency"])
        table.add_row(i["number"] or f"(draft {i['lago_id'][:8]})", i["invoice_type"],
                      i["customer"]["external_id"],
                      i["issuing_date"], i["status"], money(i["fees_amount_cents"]),
                      money(i["taxes_amount_cents"]), money(i["prepaid_credit_amount_cents"]),
                      money(i["total_amount_cents"]))
    _console().print(table)
    if not invoices:
        typer.echo("No invoices yet: periods are closed once they end "
                   "(`tallyflow invoices close`).")


def _table(title: str, left: tuple[str, ...], right: tuple[str, ...],
           after: tuple[str, ...] = ()) -> Table:
    """Text columns left-aligned, figures right-aligned, in the order given."""
    table = Table(title=title)
    for column in (*left, *right, *after):
        table.add_column(column, justify="right" if column in right else "left")
    return table


@app.command("advance-fees")
def advance_fees(
    subscription: str | None = typer.Option(None, "--subscription",
                                            help="External subscription id."),
    as_json: bool = typer.Option(False, "--json", help='Lago\'s {"fees": [...]}.'),
) -> None:
    """Fees of charges paid in advance, one per event, in billing order."""
    from tallyflow.tasks.invoicing import list_advance_fees

    fees = list_advance_fees(billing_engine(), subscription=subscription)
    if as_json:
        typer.echo(json.dumps({"fees": fees}, indent=2))
        return
    table = _table("fees paid in advance", ("event", "subscription", "charge"),
                   ("units", "amount", "taxes", "paid"), ("status", "invoice"))
    for f in fees:
        money = partial(lago_money, currency=f["amount_currency"])
        table.add_row(f["event_transaction_id"], f["external_subscription_id"],
                      f["item"]["filter_invoice_display_name"] or f["item"]["name"], f["units"],
                      money(f["amount_cents"]), money(f["taxes_amount_cents"]),
                      money(f["prepaid_credit_amount_cents"]), f["payment_status"],
                      f["invoice_number"] or "-")
    _console().print(table)
    if not fees:
        typer.echo("No fees paid in advance yet (charges with pay_in_advance: true are billed"
                   " per event by the billing cycle).")


@app.command("show")
def show(
    key: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    as_json: bool = typer.Option(False, "--json", help='Lago\'s {"invoice": {...}}.'),
) -> None:
    """One invoice with its fees and taxes."""
    from tallyflow.tasks.invoicing import find_invoice

    invoice = find_invoice(billing_engine(), key)
    if invoice is None:
        _fail(f"no invoice {key!r} (hint: `tallyflow invoices list`)")
        return
    if as_json:
        typer.echo(json.dumps({"invoice": invoice}, indent=2))
        return
    money = partial(lago_money, currency=invoice["currency"])
    console = _console()
    console.print(f"[bold]Invoice {invoice['number'] or '(draft)'}[/bold]  "
                  f"{invoice['status']}, payment {invoice['payment_status']}, issued "
                  f"{invoice['issuing_date']}, customer {invoice['customer']['external_id']}")
    table = Table()
    for column in ("item", "subscription", "units", "amount", "taxes", "total"):
        table.add_column(column, justify="left" if column in ("item", "subscription")
                         else "right")
    for fee in invoice["fees"]:
        item = fee["item"]
        label = item["invoice_display_name"]
        if item["filter_invoice_display_name"]:
            label += f" / {item['filter_invoice_display_name']}"
        if item["grouped_by"]:
            label += " / " + ", ".join(f"{k}={v}" for k, v in item["grouped_by"].items())
        if item["type"] != "charge" or item["true_up"]:
            label += f" ({'minimum' if item['true_up'] else item['type']})"
        table.add_row(label, fee["external_subscription_id"] or "", fee["units"],
                      money(fee["amount_cents"]), money(fee["taxes_amount_cents"]),
                      money(fee["total_amount_cents"]))
    console.print(table)
    for credit in invoice["credits"]:
        console.print(f"coupon {credit['item']['code']}: -{money(credit['amount_cents'])}")
    console.print(f"fees {money(invoice['fees_amount_cents'])}, coupons "
                  f"-{money(invoice['coupons_amount_cents'])}, taxes "
                  f"{money(invoice['taxes_amount_cents'])}, prepaid credits "
                  f"-{money(invoice['prepaid_credit_amount_cents'])}, total "
                  f"[bold]{money(invoice['total_amount_cents'])}[/bold]")


def _fee_item(text: str) -> dict[str, str]:
    """``CODE[:UNITS[:UNIT_AMOUNT_CENTS]]`` -> a Lago ``fees[]`` item."""
    code, *rest = text.split(":")
    if len(rest) > 2:
        _fail(f"--fee {text!r}: expected CODE[:UNITS[:UNIT_AMOUNT_CENTS]]")
    item = {"add_on_code": code}
    item.update({name: value for name, value in zip(("units", "unit_amount_cents"), rest,
                                                      strict=False) if value})
    return item


def _one_off_body(customer: str | None, fees: list[str], currency: str | None,
                  file: Path | None) -> object:
    from tallyflow.models.exact_json import loads_exact

    if file is not None:
        if customer or fees or currency:
            _fail("--file holds the whole request: give no --customer, --fee or --currency")
        return loads_exact(file.read_bytes())
    if not customer or not fees:
        _fail("give --customer and at least one --fee (or --file with Lago's body)")
    invoice: dict[str, object] = {"external_customer_id": customer,
                                  "fees": [_fee_item(f) for f in fees]}
    if currency:
        invoice["currency"] = currency
    return {"invoice": invoice}


@app.command("create")
def create(
    customer: str | None = typer.Option(None, "--customer", help="The customer's external_id."),
    fee: list[str] = typer.Option([], "--fee", help="CODE[:UNITS[:UNIT_AMOUNT_CENTS]] of an "
                                  "add-on (repeat for several fees)."),
    currency: str | None = typer.Option(None, "--currency", help="Must be the customer's."),
    file: Path | None = typer.Option(None, "--file", help='Lago\'s {"invoice": {...}} body '
                                     "(descriptions, dates, tax codes)."),
    key: str | None = typer.Option(None, "--key", help="Idempotency key: a repeat with the "
                                   "same key and request makes nothing more."),
    as_json: bool = typer.Option(False, "--json", help='Lago\'s {"invoice": {...}}.'),
) -> None:
    """A one-off invoice of add-on fees, finalized and paid from the wallets at once."""
    from datetime import UTC, datetime

    from tallyflow.models.invoicing.one_off import OneOffError, parse_one_off
    from tallyflow.tasks.invoicing import create_one_off_invoice, find_invoice

    body = _one_off_body(customer, fee, currency, file)
    engine = billing_engine()
    try:
        made = create_one_off_invoice(engine, parse_one_off(body), datetime.now(UTC),
                                      f"cli:{key}" if key else None)
    except OneOffError as exc:
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.problems.items())
        _fail(f"{exc.code}{': ' + details if details else ''}"
              " (hint: `tallyflow catalog show` lists the add-ons)")
        return
    invoice = find_invoice(engine, made.lago_id)
    assert invoice is not None
    if as_json:
        typer.echo(json.dumps({"invoice": invoice}, indent=2))
        return
    again = " (already made with this key)" if made.replayed else ""
    typer.echo(f"{made.number}{again}: {len(invoice['fees'])} fee(s), total "
               f"{lago_money(invoice['total_amount_cents'], invoice['currency'])} due, "
               f"{lago_money(invoice['prepaid_credit_amount_cents'], invoice['currency'])}"
               f" paid from wallets, payment {invoice['payment_status']}")


def _document(key: str, output: Path, kind: str) -> None:
    from tallyflow.tasks.invoicing import invoice_document

    write_document(lambda: invoice_document(billing_engine(), key, kind), output,
                   f"no invoice {key!r} (hint: `tallyflow invoices list`)")


@app.command("pdf")
def pdf(
    key: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    output: Path = typer.Option(..., "--output", "-o", help="The PDF file to write."),
) -> None:
    """The invoice's PDF (made by the invoice-pdfs flow, or rendered now from the HTML kept
    at finalization if the flow has not made it yet; needs the ``pdf`` extra)."""
    _document(key, output, "pdf")


@app.command("pdfs")
def pdfs(
    max_pdfs: int = typer.Option(5000, "--max", min=1, help="Render at most this many PDFs."),
    max_seconds: int = typer.Option(300, "--max-seconds", min=1, max=3600,
                                    help="Stop after this many seconds; the rest is for the"
                                         " next run."),
    chunk: int = typer.Option(10, "--chunk", min=1, max=500,
                              help="PDFs rendered and stored per transaction."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the invoice-pdfs flow now: PDFs of finalized invoices that have none yet (the
    billing cycle renders none; served, the flow runs every 10 minutes)."""
    billing_engine()
    with flow_session():
        from tallyflow.flows.invoice_pdfs import invoice_pdfs

        summary = invoice_pdfs(max_pdfs=max_pdfs, max_seconds=max_seconds, chunk=chunk)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{summary['rendered']} PDF(s) rendered in {summary['seconds']} s"
               f" ({summary['pdfs_per_second']}/s), {summary['remaining']} remaining"
               f" (stopped: {summary['stopped']})")


@app.command("html")
def html(
    key: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    output: Path = typer.Option(..., "--output", "-o", help="The HTML file to write."),
) -> None:
    """The invoice's HTML document (kept at finalization)."""
    _document(key, output, "html")


def _payment(key: str, status: str) -> None:
    from tallyflow.tasks.invoicing import InvoiceError, record_payment

    try:
        invoice = record_payment(billing_engine(), key, status)
    except InvoiceError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{invoice['number']}: payment {invoice['payment_status']}, due "
               f"{lago_money(invoice['total_due_amount_cents'], invoice['currency'])}")


@app.command("mark-paid")
def mark_paid(key: str = typer.Argument(..., help="Invoice number, lago_id or id.")) -> None:
    """Record that a finalized invoice was paid (payment_status succeeded); paying a credit
    invoice settles its purchased credits."""
    _payment(key, "succeeded")


@app.command("mark-failed")
def mark_failed(key: str = typer.Argument(..., help="Invoice number, lago_id or id.")) -> None:
    """Record that a finalized invoice's payment failed (payment_status failed); a credit
    invoice's credits stay pending."""
    _payment(key, "failed")


@app.command("late-usage")
def late_usage_command(
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Events that arrived after their period's invoice was finalized: not billed (as in
    Lago), listed so that usage and invoices never differ without a reason."""
    from tallyflow.tasks.invoicing import late_usage, late_usage_count

    engine = billing_engine()
    with engine.connect() as conn:
        total = late_usage_count(conn)
    rows = late_usage(engine, limit)
    if as_json:
        typer.echo(json.dumps({"late_events": total, "events": rows}, default=str))
        return
    typer.echo(f"{total} late event(s) (arrived after their invoice was finalized; not billed)")
    if rows:
        table = Table()
        for column in ("invoice", "subscription", "transaction_id", "code", "timestamp",
                       "ingested_at"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["number"], r["external_subscription_id"], r["transaction_id"],
                          r["code"], r["timestamp"].isoformat(), r["ingested_at"].isoformat())
        _console().print(table)


@app.command("void")
def void(
    key: str = typer.Argument(..., help="Invoice number, lago_id or id."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    """Void a finalized invoice (Lago's void): it stays, marked voided, and the prepaid
    credits it took go back to the wallets as ledger corrections."""
    from datetime import UTC, datetime

    from tallyflow.tasks.corrections import InvoiceVoidRefused, void_invoice

    try:
        done = void_invoice(billing_engine(), key, datetime.now(UTC))
    except InvoiceVoidRefused as exc:
        _fail(f"refused ({exc.code}): {exc}")
        return
    if as_json:
        typer.echo(json.dumps(done.as_dict()))
        return
    typer.echo(f"{done.number}: voided; {done.restored_cents} cents of prepaid credits given"
               f" back to the wallets ({len(done.corrections)} ledger correction(s))")
    for wallet, cents in done.not_restored.items():
        typer.echo(f"  wallet {wallet} is no longer active: its {cents} cents stay consumed")


@app.command("regenerate")
def regenerate(
    key: str = typer.Argument(..., help="The voided invoice: number, lago_id or id."),
    as_json: bool = typer.Option(False, "--json", help="Print the new invoice as JSON."),
) -> None:
    """Issue the finalized invoice that replaces a voided one: the same fees, taxes and
    periods (the same plan versions; late events still not counted), a new number, its
    prepaid credits paid from the wallets anew."""
    from datetime import UTC, datetime

    from tallyflow.tasks.corrections import InvoiceVoidRefused, regenerate_invoice

    try:
        done = regenerate_invoice(billing_engine(), key, datetime.now(UTC))
    except InvoiceVoidRefused as exc:
        _fail(f"refused ({exc.code}): {exc}")
        return
    if as_json:
        typer.echo(json.dumps(done.as_dict()))
        return
    typer.echo(f"{done.number}: finalized, replacing invoice {done.voided_invoice_id};"
               f" prepaid credits {done.prepaid_credit_amount_cents} cents,"
               f" total {done.total_amount_cents} cents")
