"""One-off invoices (Lago's ``invoice_type: "one_off"``, ``POST /invoices``): add-on fees
invoiced at once, finalized, numbered in the customer's sequence and paid from its wallets.

The fees are pure (``tallyflow.models.invoicing.one_off``); this module writes them, in ONE
transaction under the customer row lock that the period close and the credit invoices take:
the invoice, its fees, the wallets' payment (ledger key ``invoice:<id>:<wallet>``, as at any
finalization: ``prepaid.py``), the number and the sealed document commit together or not at
all. So a crash leaves nothing, and a retry starts afresh.

Exactly once: a posting's idempotency key (the API's ``Idempotency-Key`` header, the CLI's
``--key``) is unique on ``invoices``; under the lock, a key already used answers with the
invoice it made (``replayed``), so a retried, crashed-and-retried or concurrent posting makes
one invoice and moves the wallets once. The same key with another request is refused
(``idempotency_key_reused``) rather than answered with an invoice for something else.
Without a key each posting is a new invoice, as in Lago.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from tallyflow.infra.failpoints import failpoint
from tallyflow.models import number_rule
from tallyflow.models.catalog import loads
from tallyflow.models.invoicing import InvoiceAmounts, InvoiceFee, TaxError, amounts_of
from tallyflow.models.invoicing.one_off import (
    AddOnInfo,
    OneOffError,
    OneOffRequest,
    add_on_fee,
    missing_add_ons,
)
from tallyflow.models.wallets import InvoiceDue, WalletFunds, plan_invoice_payments
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.documents import render_sealed
from tallyflow.tasks.invoicing.inputs import CustomerInfo, load_close_catalog
from tallyflow.tasks.invoicing.prepaid import _FUNDS
from tallyflow.tasks.invoicing.watermark import invoice_prefix
from tallyflow.tasks.invoicing.writing import customer_object
from tallyflow.tasks.wallets import LedgerRow, lock_customers, post


@dataclass(frozen=True)
class OneOffResult:
    """The invoice made (or found again: ``replayed``) by a posting."""

    invoice_id: int
    lago_id: str
    number: str
    replayed: bool


def _json(value: Any) -> str:
    # integers beyond 64 bits written exactly, not refused (docs/architecture.md §7)
    return number_rule.dumps(value, default=str).decode()


def _add_ons(conn: Connection, codes: Sequence[str]) -> dict[str, AddOnInfo]:
    rows = conn.execute(text(
        "select id, code, name, invoice_display_name, description, amount_cents,"
        " document::text as document from add_ons"
        " where code = any(cast(:codes as text[])) and deleted_at is null"),
        {"codes": sorted(set(codes))})
    return {r.code: AddOnInfo(int(r.id), r.code, r.name, r.invoice_display_name,
                              r.description, Decimal(r.amount_cents),
                              tuple(loads(r.document).get("tax_codes") or ()))
            for r in rows}


def _replay(conn: Connection, key: str | None, digest: str) -> OneOffResult | None:
    if key is None:
        return None
    row = conn.execute(text("select id, lago_id, number, request_digest from invoices"
                            " where idempotency_key = :k"), {"k": key}).first()
    if row is None:
        return None
    if row.request_digest != digest:
        raise OneOffError("validation_errors", {"idempotency_key": ["idempotency_key_reused"]})
    return OneOffResult(int(row.id), row.lago_id, row.number, replayed=True)


def _fees(conn: Connection, request: OneOffRequest, customer: CustomerInfo,
          at: datetime) -> InvoiceAmounts:
    """The invoice's amounts; the add-ons and taxes as the catalog has them now."""
    add_ons = _add_ons(conn, [f.add_on_code for f in request.fees])
    if missing_add_ons(request, add_ons):
        raise OneOffError("add_on_not_found", status=404)
    catalog = load_close_catalog(conn, [customer.id])
    entity_codes = customer.entity.tax_codes if customer.entity else ()
    try:
        fees = [add_on_fee(f, add_ons[f.add_on_code], at, catalog.taxes, customer.tax_codes,
                           entity_codes) for f in request.fees]
    except TaxError:
        raise OneOffError("tax_not_found", status=404) from None
    assert customer.currency is not None
    return amounts_of(customer.currency, fees)


def _customer(conn: Connection, request: OneOffRequest) -> CustomerInfo:
    """The customer, its row locked (numbers without gaps) and its wallets' rows (the lock
    the hourly deductions take)."""
    found = conn.execute(text("select id from customers where external_id = :e for update"),
                         {"e": request.external_customer_id}).scalar()
    if found is None:
        raise OneOffError("customer_not_found", status=404)
    lock_customers(conn, [int(found)])
    customer = load_close_catalog(conn, [int(found)]).customers[int(found)]
    if customer.currency is None:
        raise OneOffError("validation_errors", {"currency": ["value_is_mandatory"]})
    if request.currency is not None and request.currency != customer.currency:
        raise OneOffError("validation_errors", {"currency": ["currencies_does_not_match"]})
    return customer


def create_one_off_invoice(
    engine: Engine, request: OneOffRequest, at: datetime, key: str | None = None,
) -> OneOffResult:
    """Invoice the request's add-on fees now (``at``): finalized, numbered, paid from the
    wallets as far as they go. With ``key``, a repeat of the same request finds its invoice."""
    try:
        return _create(engine, request, at, key)
    except IntegrityError as exc:
        # the key taken meanwhile by a posting for another customer (each customer's postings
        # are serialised by its row lock, so only another request can race for the key)
        if "uq_invoices_idempotency_key" not in str(exc.orig):
            raise
        raise OneOffError("validation_errors",
                          {"idempotency_key": ["idempotency_key_reused"]}) from None


def _create(engine: Engine, request: OneOffRequest, at: datetime,
            key: str | None) -> OneOffResult:
    digest = request.digest()
    with engine.begin() as conn:
        customer = _customer(conn, request)
        replayed = _replay(conn, key, digest)
        if replayed is not None:
            return replayed
        amounts = _fees(conn, request, customer, at)
        invoice_id, lago_id = _insert(conn, customer, amounts, at, key, digest)
        failpoint("one_off.after_fees", conn)
        prepaid = _pay(conn, customer, invoice_id, amounts, at)
        number = _number(conn, customer, invoice_id, amounts.with_prepaid(int(prepaid)))
        failpoint("one_off.before_seal", conn)
        document = render_sealed(conn, [invoice_id])[invoice_id]
        conn.execute(text("update invoices set status = 'finalized', finalized_at = now(),"
                          " html = :html, updated_at = now() where id = :id"),
                     {"html": document, "id": invoice_id})
        announce_invoices(conn, [invoice_id])  # invoice.created, in this transaction (§17)
    return OneOffResult(invoice_id, lago_id, number, replayed=False)


def _insert(conn: Connection, customer: CustomerInfo, amounts: InvoiceAmounts, at: datetime,
            key: str | None, digest: str) -> tuple[int, str]:
    day = at.astimezone(ZoneInfo(customer.timezone or "UTC")).date()
    lago_id = str(uuid.uuid4())
    applied = [{"tax_code": a.code, "tax_name": a.name, "tax_rate": format(a.rate, "f"),
                "fees_amount_cents": a.fees_amount_cents, "amount_cents": a.amount_cents,
                "amount_currency": amounts.currency} for a in amounts.applied_taxes]
    invoice_id = int(conn.execute(text(
        """
        insert into invoices (lago_id, customer_id, invoice_type, issuing_date, currency,
          fees_amount_cents, taxes_amount_cents, total_amount_cents, applied_taxes, customer,
          billing_entity, finalize_after, net_payment_term, payment_due_date,
          idempotency_key, request_digest)
        values (:lago, :customer, 'one_off', :day, :currency, :fees, :taxes, :total,
          cast(:applied as jsonb), cast(:customer_object as jsonb), cast(:entity as jsonb),
          :at, :term, cast(:day as date) + :term, :key, :digest)
        returning id
        """), {
        "lago": lago_id, "customer": customer.id, "day": day, "currency": amounts.currency,
        "fees": amounts.fees_amount_cents, "taxes": amounts.taxes_amount_cents,
        "total": amounts.total_amount_cents, "applied": _json(applied),
        "customer_object": _json(customer_object(customer)),
        "entity": _json(dict(customer.entity.document)) if customer.entity else None,
        "at": at, "term": customer.net_payment_term, "key": key, "digest": digest,
    }).scalar_one())
    for position, fee in enumerate(amounts.fees):
        _insert_fee(conn, invoice_id, position, fee)
    return invoice_id, lago_id


def _insert_fee(conn: Connection, invoice_id: int, position: int, fee: InvoiceFee) -> None:
    conn.execute(text(
        """
        insert into invoice_fees (lago_id, invoice_id, position, item_type, code, name,
          invoice_display_name, units, events_count, amount_cents, precise_amount_cents,
          taxes_rate, taxes_precise_amount_cents, taxes_amount_cents, total_amount_cents,
          applied_taxes, from_datetime, to_datetime, add_on_id, description, unit_amount_cents)
        values (:lago, :invoice, :position, 'add_on', :code, :name, :display, :units, 0,
          :amount, :precise, :rate, :taxes_precise, :taxes, :total, cast(:applied as jsonb),
          :from, :to, :add_on, :description, :unit)
        """), {
        "lago": str(uuid.uuid4()), "invoice": invoice_id, "position": position,
        "code": fee.code, "name": fee.name, "display": fee.invoice_display_name,
        "units": fee.units, "amount": fee.amount_cents, "precise": fee.precise_amount_cents,
        "rate": fee.taxes_rate, "taxes_precise": fee.taxes_precise_amount_cents,
        "taxes": fee.taxes_amount_cents, "total": fee.total_amount_cents,
        "applied": _json([{"tax_code": t.code, "tax_name": t.name,
                           "tax_rate": format(t.rate, "f")} for t in fee.taxes]),
        "from": fee.from_datetime, "to": fee.to_datetime, "add_on": fee.add_on_id,
        "description": fee.description, "unit": fee.unit_amount_cents,
    })


def _pay(conn: Connection, customer: CustomerInfo, invoice_id: int, amounts: InvoiceAmounts,
         at: datetime) -> Decimal:
    """What the wallets pay toward the invoice, posted now: the same allocation, ledger key
    and source as the last deduction of a finalized period invoice (``prepaid.py``)."""
    funds = {r.id: WalletFunds(r.id, r.priority, r.created_at, r.rate_amount, r.currency,
                               r.credits_balance, r.granted_credits_balance, r.balance_cents)
             for r in conn.execute(_FUNDS, {"ids": [customer.id], "at": at})}
    due = InvoiceDue(customer.id, amounts.currency,
                     Decimal(amounts.sub_total_including_taxes_amount_cents))
    [allocation] = plan_invoice_payments([due], funds, {customer.id: sorted(funds)})
    post(conn, [LedgerRow(
        p.wallet_id, customer.id, p.direction, "settled", "invoice", p.credits, p.amount_cents,
        f"invoice:{invoice_id}:{p.wallet_id}", granted_credits=p.granted_credits,
        note=f"invoice {invoice_id}: paid {p.amount_cents} cents at finalization",
    ) for p in allocation.postings], at)
    return sum((p.amount_cents for p in allocation.postings), Decimal(0))


def _number(conn: Connection, customer: CustomerInfo, invoice_id: int,
            settled: InvoiceAmounts) -> str:
    """The next number of the customer's sequence (its row is locked: no gaps), the wallets'
    part and what is left due; paid when nothing is (Lago's ``payment_status``)."""
    seq = int(conn.execute(text("select coalesce(max(sequential_id), 0) + 1 from invoices"
                                " where customer_id = :c"), {"c": customer.id}).scalar_one())
    entity = customer.entity
    prefix = entity.prefix if entity and entity.prefix else invoice_prefix()
    number = f"{prefix}-{customer.id:03d}-{seq:03d}"
    conn.execute(text(
        "update invoices set sequential_id = :seq, number = :number, prepaid_credit_amount_cents"
        " = :prepaid, total_amount_cents = :total, payment_status = :status where id = :id"), {
        "seq": seq, "number": number, "prepaid": settled.prepaid_credit_amount_cents,
        "total": settled.total_amount_cents,
        "status": "pending" if settled.total_amount_cents > 0 else "succeeded", "id": invoice_id,
    })
    return number
