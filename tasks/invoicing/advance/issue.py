"""Invoices of charges paid in advance, and the period-end regrouping of their paid fees.

Two invoice types (docs/invoices.md, "Charges paid in advance"):

- ``pay_in_advance``: the fees of the events a billing cycle billed for one subscription
  (``invoiceable: true`` charges), issued and finalized at once, paid from the wallets as far
  as they go. Lago issues one invoice per event (its type ``subscription``); Tallyflow groups
  the events of one billing-cycle hour, one fee per event as Lago's.
- ``advance_charges``: at period end, the fees of ``invoiceable: false`` charges with
  ``regroup_paid_fees: "invoice"`` that the wallets paid in full (Lago's ``succeeded``), on one
  invoice per customer and billing day, finalized as paid (Lago's
  ``Invoices::AdvanceChargesService``). Fees not fully paid stay off it, as in Lago.

Both are written inside the caller's transaction, under the customer's row lock, so their
numbers continue the customer's sequence without gaps.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.invoicing import ZERO, InvoiceFee, Tax, amounts_of, applicable_taxes
from tallyflow.models.wallets import granted_cents, prepaid_breakdown
from tallyflow.tasks.folding import loads_exact
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.documents import render_sealed
from tallyflow.tasks.invoicing.inputs import CloseCatalog, CustomerInfo, load_close_catalog
from tallyflow.tasks.invoicing.watermark import invoice_prefix
from tallyflow.tasks.invoicing.writing import _applied_taxes, _json, customer_object


@dataclass(frozen=True)
class AdvanceLine:
    """One fee of an advance invoice: the invoice fee and the event it bills."""

    fee: InvoiceFee
    subscription_id: int
    event_transaction_id: str


# What paid a pay_in_advance invoice: its postings, one per wallet of the customer, keyed
# ``invoice:<invoice id>:<wallet id>`` (tasks/invoicing/advance/charges.py), found by the key's
# unique index.
_PAID = text(
    """
    select t.direction, t.amount_cents, t.credits, t.granted_credits
    from wallets w join wallet_transactions t
      on t.idempotency_key = 'invoice:' || cast(:invoice as text) || ':' || cast(w.id as text)
    where w.customer_id = (select customer_id from invoices where id = :invoice)
    """
)


def _granted_paid(conn: Connection, invoice_id: int) -> Decimal:
    """The money of the granted credits that paid the invoice, unrounded
    (``models.wallets.prepaid_breakdown`` splits it off the prepaid amount)."""
    total = Decimal(0)
    for r in conn.execute(_PAID, {"invoice": invoice_id}):
        part = granted_cents(r.amount_cents, r.credits, r.granted_credits)
        total += part if r.direction == "outbound" else -part
    return total


def issue_invoice(
    conn: Connection, customer: CustomerInfo, invoice_type: str, issuing_day: date,
    currency: str, lines: Sequence[AdvanceLine], at: datetime,
    pay: Callable[[int, int], Decimal | int], *, paid: bool = False,
) -> tuple[int, str, int]:
    """Write, pay, number and finalize one invoice of these fees (the caller holds the
    customer's row lock). ``pay(invoice id, cents owed)`` returns what the wallets paid
    toward it (posted before the invoice is sealed: a finalized invoice never changes).
    Returns (id, number, total left to pay)."""
    amounts = amounts_of(currency, [line.fee for line in lines])
    term = customer.net_payment_term
    invoice_id = int(conn.execute(text(
        """
        insert into invoices (lago_id, customer_id, invoice_type, issuing_date, currency,
          fees_amount_cents, taxes_amount_cents, prepaid_credit_amount_cents, total_amount_cents,
          applied_taxes, customer, billing_entity, finalize_after, net_payment_term,
          payment_due_date)
        values (:lago, :customer, :type, :day, :currency, :fees, :taxes, 0, :total,
          cast(:applied as jsonb), cast(:customer_object as jsonb), cast(:entity as jsonb), :at,
          :term, cast(:day as date) + :term)
        returning id
        """), {
        "lago": str(uuid.uuid4()), "customer": customer.id, "type": invoice_type,
        "day": issuing_day, "currency": currency, "fees": amounts.fees_amount_cents,
        "taxes": amounts.taxes_amount_cents, "total": amounts.total_amount_cents,
        "applied": _json(_applied_taxes(amounts)),
        "customer_object": _json(customer_object(customer)),
        "entity": _json(dict(customer.entity.document)) if customer.entity else None,
        "at": at, "term": term,
    }).scalar_one())
    conn.execute(text(
        """
        insert into invoice_fees (lago_id, invoice_id, position, subscription_id,
          external_subscription_id, item_type, code, name, invoice_display_name,
          filter_invoice_display_name, grouped_by, charge_id, units, events_count,
          amount_cents, precise_amount_cents, taxes_rate, taxes_precise_amount_cents,
          taxes_amount_cents, total_amount_cents, applied_taxes, from_datetime, to_datetime,
          event_transaction_id)
        values (:lago, :invoice, :position, :sub, :external, 'charge', :code, :name, :display,
          :filter_display, cast(:grouped_by as jsonb), :charge, :units, 1, :amount, :precise,
          :rate, :taxes_precise, :taxes, :total, cast(:applied as jsonb), :from_at, :to_at,
          :event)
        """), [_fee_row(invoice_id, position, line) for position, line in enumerate(lines)])
    failpoint("advance.before_payment", conn)
    amounts = amounts.with_prepaid(int(pay(invoice_id,
                                           amounts.sub_total_including_taxes_amount_cents)))
    number, seq = _number(conn, customer)
    granted, purchased = (
        prepaid_breakdown(amounts.prepaid_credit_amount_cents, _granted_paid(conn, invoice_id))
        if invoice_type == "pay_in_advance" else (None, None))
    conn.execute(text("update invoices set prepaid_credit_amount_cents = :prepaid,"
                      " prepaid_granted_credit_amount_cents = :granted,"
                      " prepaid_purchased_credit_amount_cents = :purchased,"
                      " total_amount_cents = :total, sequential_id = :seq, number = :number"
                      " where id = :id"),
                 {"prepaid": amounts.prepaid_credit_amount_cents, "seq": seq, "number": number,
                  "total": amounts.total_amount_cents, "id": invoice_id,
                  "granted": granted, "purchased": purchased})
    html = render_sealed(conn, [invoice_id])[invoice_id]
    failpoint("advance.before_seal", conn)
    conn.execute(text(
        """
        update invoices set status = 'finalized', finalized_at = now(), html = :html,
          updated_at = now(), payment_status = case when :paid or :total = 0 then 'succeeded'
                                else payment_status end
        where id = :id
        """), {"html": html, "id": invoice_id, "paid": paid,
               "total": amounts.total_amount_cents})
    announce_invoices(conn, [invoice_id])
    return invoice_id, number, amounts.total_amount_cents


def _fee_row(invoice_id: int, position: int, line: AdvanceLine) -> dict[str, object]:
    fee = line.fee
    return {
        "lago": str(uuid.uuid4()), "invoice": invoice_id, "position": position,
        "sub": line.subscription_id, "external": fee.external_subscription_id,
        "code": fee.code, "name": fee.name, "display": fee.invoice_display_name,
        "filter_display": fee.filter_invoice_display_name,
        "grouped_by": _json(dict(fee.grouped_by)), "charge": fee.charge_id, "units": fee.units,
        "amount": fee.amount_cents, "precise": fee.precise_amount_cents,
        "rate": fee.taxes_rate, "taxes_precise": fee.taxes_precise_amount_cents,
        "taxes": fee.taxes_amount_cents, "total": fee.total_amount_cents,
        "applied": _json([{"tax_code": t.code, "tax_name": t.name,
                           "tax_rate": format(t.rate, "f")} for t in fee.taxes]),
        "from_at": fee.from_datetime, "to_at": fee.to_datetime,
        "event": line.event_transaction_id,
    }


def _number(conn: Connection, customer: CustomerInfo) -> tuple[str, int]:
    """The next number of the customer's sequence (the caller holds the customer's lock)."""
    seq = int(conn.execute(text(
        "select coalesce(max(sequential_id), 0) + 1 from invoices where customer_id = :c"),
        {"c": customer.id}).scalar_one())
    entity = customer.entity
    prefix = entity.prefix if entity and entity.prefix else invoice_prefix()
    return f"{prefix}-{customer.id:03d}-{seq:03d}", seq


# --------------------------------------------------------------------------------------------
# Period end: paid fees of invoiceable: false charges regrouped (regroup_paid_fees: invoice)
# --------------------------------------------------------------------------------------------

_REGROUPABLE = """
    select f.id, f.customer_id, f.subscription_id, s.external_id, f.charge_id, f.bucket,
           f.charge_position, c.plan_id,
           f.grouped_by::text as grouped_by, f.period_start, f.period_end, f.transaction_id,
           f.units, f.currency, f.amount_cents, f.precise_amount_cents, f.prepaid_cents,
           f.taxes_amount_cents, f.taxes_precise_amount_cents, m.code, m.name,
           c.invoice_display_name, cf.invoice_display_name as filter_display_name
    from advance_fees f
    join subscriptions s on s.id = f.subscription_id
    join customers cu on cu.id = f.customer_id
    join charges c on c.id = f.charge_id
    join billable_metrics m on m.id = c.billable_metric_id
    left join charge_filters cf on cf.charge_id = f.charge_id and cf.position = f.bucket
    where f.regroup and f.invoice_id is null and f.period_end < :at and f.amount_cents > 0
      and f.prepaid_cents >= f.amount_cents + f.taxes_amount_cents
      and (cast(:only as text[]) is null or cu.external_id = any(cast(:only as text[])))
"""


def regroup_paid_fees(
    engine: Engine, at: datetime, customers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Put the paid fees of periods ended before ``at`` on ``advance_charges`` invoices: one
    per customer, currency and billing day (the day after the period's end), in one
    transaction per customer under its row lock (a rerun finds them regrouped). ``customers``
    limits it to these external ids."""
    with engine.connect() as conn:
        due = sorted({int(r.customer_id) for r in conn.execute(text(_REGROUPABLE), {
            "at": at, "only": list(customers) if customers is not None else None})})
    issued: list[dict[str, Any]] = []
    for customer_id in due:
        with engine.begin() as conn:
            conn.execute(text("select id from customers where id = :c for update"),
                         {"c": customer_id})
            rows = conn.execute(text(_REGROUPABLE + " and f.customer_id = :c order by f.id"),
                                {"at": at, "c": customer_id, "only": None}).all()
            catalog = load_close_catalog(conn)
            customer = catalog.customers[customer_id]
            zone = ZoneInfo(customer.timezone or "UTC")
            groups: dict[tuple[str, date], list[Any]] = defaultdict(list)
            for row in rows:
                day = row.period_end.astimezone(zone).date() + timedelta(days=1)
                groups[(row.currency, day)].append(row)
            for (currency, day), fees in sorted(groups.items()):
                lines = [AdvanceLine(_regrouped_fee(r, catalog, customer), r.subscription_id,
                                     r.transaction_id) for r in fees]
                paid = sum((Decimal(r.prepaid_cents) for r in fees), Decimal(0))
                invoice_id, number, _ = issue_invoice(
                    conn, customer, "advance_charges", day, currency, lines, at,
                    _already(paid), paid=True)
                conn.execute(text("update advance_fees set invoice_id = :i"
                                  " where id = any(cast(:ids as bigint[]))"),
                             {"i": invoice_id, "ids": [r.id for r in fees]})
                issued.append({"number": number, "customer": customer.external_id,
                               "fees": len(fees), "issuing_date": day.isoformat()})
    return issued


def _already(paid: Decimal) -> Callable[[int, int], Decimal]:
    """Regrouped fees were paid when billed: the invoice records it, nothing is taken."""
    return lambda _invoice_id, _owed: paid


def charge_taxes(
    catalog: CloseCatalog, customer: CustomerInfo, plan_id: int, position: int
) -> tuple[Tax, ...]:
    """The taxes of a plan's charge for this customer: the charge's, else the plan's, else the
    customer's, else its billing entity's, else the organization's (as at period close)."""
    plan = catalog.plans[plan_id]
    codes = plan.charge_tax_codes[position] if position < len(plan.charge_tax_codes) else ()
    return applicable_taxes(
        [codes, plan.tax_codes, customer.tax_codes,
         customer.entity.tax_codes if customer.entity else ()], catalog.taxes)


def _regrouped_fee(row: Any, catalog: CloseCatalog, customer: CustomerInfo) -> InvoiceFee:
    """A stored advance fee as an invoice fee (its taxes by the same rule as when billed)."""
    return InvoiceFee(
        "charge", row.external_id, row.code, row.name, row.invoice_display_name,
        row.filter_display_name, loads_exact(row.grouped_by) or {}, max(Decimal(row.units), ZERO),
        1, int(row.amount_cents), Decimal(row.precise_amount_cents), row.period_start,
        row.period_end,
        taxes=charge_taxes(catalog, customer, row.plan_id, row.charge_position),
        charge_id=row.charge_id,
    )


# --------------------------------------------------------------------------------------------
# Reading the fees (Lago's GET /fees for pay-in-advance fees)
# --------------------------------------------------------------------------------------------

_FEES = """
    select f.lago_id, f.transaction_id, f.units, f.amount_cents, f.precise_amount_cents,
           f.taxes_amount_cents, f.currency, f.invoiceable, f.prepaid_cents, f.event_timestamp,
           f.billing_hour, f.period_start, f.period_end, f.created_at, s.external_id,
           v.lago_id as invoice_lago_id, v.number as invoice_number, m.code, m.name,
           c.invoice_display_name, cf.invoice_display_name as filter_display_name,
           f.grouped_by::text as grouped_by
    from advance_fees f
    join subscriptions s on s.id = f.subscription_id
    join charges c on c.id = f.charge_id
    join billable_metrics m on m.id = c.billable_metric_id
    left join charge_filters cf on cf.charge_id = f.charge_id and cf.position = f.bucket
    left join invoices v on v.id = f.invoice_id
"""


def list_advance_fees(
    engine: Engine, *, subscription: str | None = None, limit: int = 1000,
) -> list[dict[str, Any]]:
    """Fees of charges paid in advance, in billing order, with Lago's fee field names
    (``payment_status`` ``succeeded`` once the wallets paid the fee and its taxes)."""
    query, params = _FEES, {"limit": limit, "sub": subscription}
    if subscription is not None:
        query += " where s.external_id = :sub"
    query += " order by f.id limit :limit"
    with engine.connect() as conn:
        rows = conn.execute(text(query), params).all()
    return [{
        "lago_id": r.lago_id,
        "lago_invoice_id": r.invoice_lago_id,
        "invoice_number": r.invoice_number,
        "external_subscription_id": r.external_id,
        "event_transaction_id": r.transaction_id,
        "pay_in_advance": True,
        "invoiceable": bool(r.invoiceable),
        "units": format(Decimal(r.units).normalize(), "f"),
        "amount_cents": int(r.amount_cents),
        "precise_amount_cents": format(Decimal(r.precise_amount_cents), "f"),
        "taxes_amount_cents": int(r.taxes_amount_cents),
        "total_amount_cents": int(r.amount_cents + r.taxes_amount_cents),
        "amount_currency": r.currency,
        "prepaid_credit_amount_cents": int(r.prepaid_cents),
        "payment_status": ("succeeded" if r.prepaid_cents >= r.amount_cents
                           + r.taxes_amount_cents else "pending"),
        "event_timestamp": r.event_timestamp.isoformat(),
        "billing_hour": r.billing_hour.isoformat(),
        "from_date": r.period_start.isoformat(), "to_date": r.period_end.isoformat(),
        "created_at": r.created_at.isoformat(),
        "item": {"type": "charge", "code": r.code, "name": r.name,
                 "invoice_display_name": r.invoice_display_name or r.name,
                 "filter_invoice_display_name": r.filter_display_name,
                 "grouped_by": loads_exact(r.grouped_by) or {}},
    } for r in rows]
