"""Invoices read as Lago's clients read them (``{"invoice": {...}}``), and their documents.

The object follows Lago's ``V1::InvoiceSerializer`` / ``V1::FeeSerializer`` field names so that
a Lago client can read Tallyflow's output unchanged; amounts are integers in minor units and
quantities decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.models.lago.resources import Credit, Invoice, InvoiceFee, InvoiceSubscription
from tallyflow.models.lago.times import iso
from tallyflow.models.rating.money import plain_text
from tallyflow.tasks.folding import loads_exact
from tallyflow.tasks.invoicing.render import PdfUnavailable, render_html, render_pdf

VERSION_NUMBER = 4  # Lago's current invoice version (fees with taxes, applied taxes)


def _int(value: Decimal | int) -> int:
    return int(value)


def _maybe_int(value: Decimal | int | None) -> int | None:
    return None if value is None else int(value)


def _fee_object(row: Any) -> InvoiceFee:
    fee = _fee_fields(row)
    if row.item_type == "add_on":
        # Lago's fee of a one-off invoice: its description and unit price (migration 0024)
        fee["description"] = row.description
        fee["unit_amount_cents"] = _int(row.unit_amount_cents)
        fee["item"]["lago_item_id"] = str(row.add_on_id)
    return fee


def _fee_fields(row: Any) -> InvoiceFee:
    return {
        "lago_id": row.lago_id,
        "lago_invoice_id": row.invoice_lago_id,
        "external_subscription_id": row.external_subscription_id,
        # a charge paid in advance bills one event per fee (Lago's fee.event_transaction_id)
        "event_transaction_id": row.event_transaction_id,
        "amount_cents": _int(row.amount_cents),
        "precise_amount_cents": plain_text(Decimal(row.precise_amount_cents)),
        "precise_coupons_amount_cents": plain_text(Decimal(row.precise_coupons_amount_cents)),
        "amount_currency": row.currency,
        "taxes_rate": float_free(row.taxes_rate),
        "taxes_amount_cents": _int(row.taxes_amount_cents),
        "taxes_precise_amount_cents": plain_text(Decimal(row.taxes_precise_amount_cents)),
        "total_amount_cents": _int(row.total_amount_cents),
        "total_amount_currency": row.currency,
        "units": plain_text(Decimal(row.units)),
        "events_count": int(row.events_count),
        "pay_in_advance": row.event_transaction_id is not None,
        # regrouped fees (advance_charges invoice) are those of charges kept off invoices
        "invoiceable": row.invoice_type != "advance_charges",
        "from_date": iso(row.from_datetime),
        "to_date": iso(row.to_datetime),
        "applied_taxes": loads_exact(row.applied_taxes),
        "item": {
            "type": row.item_type,
            "code": row.code,
            "name": row.name,
            "invoice_display_name": row.invoice_display_name or row.name,
            "filter_invoice_display_name": row.filter_invoice_display_name,
            "grouped_by": loads_exact(row.grouped_by) or {},
            "true_up": bool(row.true_up),
            # the charge, or for a credit fee the wallet transaction it invoices
            "lago_item_id": (str(row.charge_id) if row.charge_id is not None
                             else str(row.wallet_transaction_id)
                             if row.wallet_transaction_id is not None else None),
        },
    }


def fee_objects(conn: Connection, fee_ids: Sequence[int]) -> dict[int, InvoiceFee]:
    """Lago fee objects by fee id (a credit note's items show the fees they credit)."""
    rows = conn.execute(text(
        """
        select f.*, f.grouped_by::text as grouped_by, f.applied_taxes::text as applied_taxes,
               v.lago_id as invoice_lago_id, v.currency, v.invoice_type
        from invoice_fees f join invoices v on v.id = f.invoice_id
        where f.id = any(cast(:ids as bigint[]))
        """), {"ids": list(fee_ids)})
    return {int(r.id): _fee_object(r) for r in rows}


def float_free(value: Decimal) -> str:
    """Rates as decimal strings (Lago writes floats; a float would change the digits)."""
    return plain_text(Decimal(value))


_INVOICES = """
    select v.*, v.customer::text as customer_text, v.applied_taxes::text as applied_text,
           v.billing_entity::text as entity_text
    from invoices v
"""

_FEES = text(
    """
    select f.*, f.grouped_by::text as grouped_by, f.applied_taxes::text as applied_taxes,
           v.lago_id as invoice_lago_id, v.currency, v.invoice_type
    from invoice_fees f join invoices v on v.id = f.invoice_id
    where f.invoice_id = any(cast(:ids as bigint[]))
    order by f.invoice_id, f.position
    """
)

_CREDITS = text(
    """
    select c.invoice_id, c.lago_id, c.amount_cents, c.amount_currency, c.before_taxes,
           k.id as coupon_id, k.code, k.name, k.description, v.lago_id as invoice_lago_id,
           v.payment_status
    from coupon_credits c join applied_coupons a on a.id = c.applied_coupon_id
    join coupons k on k.id = a.coupon_id join invoices v on v.id = c.invoice_id
    where c.invoice_id = any(cast(:ids as bigint[]))
    order by c.invoice_id, c.id
    """
)


def _credits(conn: Connection, ids: Sequence[int]) -> dict[int, list[Credit]]:
    """Lago's ``credits`` of the invoices: their coupons' (tasks/invoicing/coupons.py)."""
    out: dict[int, list[Credit]] = {i: [] for i in ids}
    for c in conn.execute(_CREDITS, {"ids": list(ids)}):
        out[c.invoice_id].append({
            "lago_id": c.lago_id, "amount_cents": _int(c.amount_cents),
            "amount_currency": c.amount_currency, "before_taxes": bool(c.before_taxes),
            "item": {"lago_item_id": str(c.coupon_id), "type": "coupon", "code": c.code,
                     "name": c.name, "description": c.description},
            "invoice": {"lago_id": c.invoice_lago_id, "payment_status": c.payment_status},
        })
    return out

_OFFSETS = text(
    "select invoice_id, sum(offset_amount_cents) from credit_notes"
    " where invoice_id = any(cast(:ids as bigint[])) group by invoice_id")

_SUBSCRIPTIONS = text(
    """
    select i.invoice_id, s.id, s.external_id, s.name, p.code as plan_code, s.billing_time,
           s.subscription_at, s.status, i.from_datetime, i.to_datetime,
           pv.id as version_id, pv.version, pv.effective_from as version_from
    from invoice_subscriptions i
    join subscriptions s on s.id = i.subscription_id
    -- the plan the period was priced with (its version's), not the subscription's plan today
    left join plan_versions pv on pv.id = i.plan_version_id
    join plans p on p.id = coalesce(pv.plan_id, s.plan_id)
    where i.invoice_id = any(cast(:ids as bigint[]))
    union all
    -- a plan paid in advance: a fee for the coming period, whose own close is still ahead
    -- (named with the plan's current version: the fee is priced as the plan is when issued)
    select f.invoice_id, s.id, s.external_id, s.name, p.code as plan_code, s.billing_time,
           s.subscription_at, s.status, min(f.from_datetime), max(f.to_datetime),
           pv.id as version_id, pv.version, pv.effective_from as version_from
    from invoice_fees f
    join subscriptions s on s.id = f.subscription_id
    join plans p on p.id = s.plan_id
    left join plan_versions pv on pv.plan_id = p.id and pv.effective_to is null
    where f.invoice_id = any(cast(:ids as bigint[]))
      and not exists (select 1 from invoice_subscriptions i
                      where i.invoice_id = f.invoice_id and i.subscription_id = f.subscription_id)
    group by f.invoice_id, s.id, p.code, pv.id
    order by 1, 3
    """
)


_ENTITY_FIELDS = ("code", "name", "email", "legal_name", "legal_number",
                  "tax_identification_number", "address_line1", "address_line2", "city",
                  "zipcode", "state", "country", "invoice_footer", "document_number_prefix")


def _entity(document: dict[str, Any] | None) -> dict[str, object] | None:
    """The issuer with every field Lago shows (absent ones null)."""
    if document is None:
        return None
    return {**dict.fromkeys(_ENTITY_FIELDS), **document}


def invoice_objects(conn: Connection, rows: Sequence[Any]) -> list[Invoice]:
    """Lago invoice objects for invoice rows (each with fees and subscriptions)."""
    ids = [r.id for r in rows]
    fees: dict[int, list[InvoiceFee]] = {i: [] for i in ids}
    for f in conn.execute(_FEES, {"ids": ids}):
        fees[f.invoice_id].append(_fee_object(f))
    subs: dict[int, list[InvoiceSubscription]] = {i: [] for i in ids}
    for s in conn.execute(_SUBSCRIPTIONS, {"ids": ids}):
        subs[s.invoice_id].append({
            "lago_id": str(s.id), "external_id": s.external_id, "name": s.name,
            "plan_code": s.plan_code, "billing_time": s.billing_time, "status": s.status,
            "subscription_at": iso(s.subscription_at), "started_at": iso(s.subscription_at),
            "current_billing_period_started_at": iso(s.from_datetime),
            "current_billing_period_ending_at": iso(s.to_datetime),
            # Tallyflow: the plan version the period was priced with
            # (tasks/catalog/plan_versions.py)
            "plan_version": None if s.version_id is None else {
                "lago_id": str(s.version_id), "version": s.version,
                "effective_from": iso(s.version_from)},
        })
    credits = _credits(conn, ids)
    # what credit notes offset is no longer due (Lago's total_due_amount_cents)
    offsets = {int(i): _int(c) for i, c in conn.execute(_OFFSETS, {"ids": ids})}
    out: list[Invoice] = []
    for r in rows:
        sub_total_excl = (_int(r.fees_amount_cents) - _int(r.coupons_amount_cents)
                          - _int(r.progressive_billing_credit_amount_cents))
        sub_total_incl = sub_total_excl + _int(r.taxes_amount_cents)
        out.append({
            "lago_id": r.lago_id,
            "billing_entity_code": (loads_exact(r.entity_text) or {}).get("code"),
            "billing_entity": _entity(loads_exact(r.entity_text)),
            "sequential_id": r.sequential_id,
            "number": r.number,
            "issuing_date": r.issuing_date.isoformat(),
            "payment_dispute_lost_at": None,
            "payment_due_date": r.payment_due_date.isoformat(),
            # Lago: finalized, not paid, and the due date has passed
            "payment_overdue": (r.status == "finalized" and r.payment_status != "succeeded"
                                and r.payment_due_date < date.today()),
            "net_payment_term": r.net_payment_term,
            "invoice_type": r.invoice_type,
            "status": r.status,
            "payment_status": r.payment_status,
            "currency": r.currency,
            "fees_amount_cents": _int(r.fees_amount_cents),
            "taxes_amount_cents": _int(r.taxes_amount_cents),
            "progressive_billing_credit_amount_cents": _int(
                r.progressive_billing_credit_amount_cents),
            "coupons_amount_cents": _int(r.coupons_amount_cents),
            "credit_notes_amount_cents": _int(r.credit_notes_amount_cents),
            "sub_total_excluding_taxes_amount_cents": sub_total_excl,
            "sub_total_including_taxes_amount_cents": sub_total_incl,
            "prepaid_credit_amount_cents": _int(r.prepaid_credit_amount_cents),
            "prepaid_granted_credit_amount_cents": _maybe_int(
                r.prepaid_granted_credit_amount_cents),
            "prepaid_purchased_credit_amount_cents": _maybe_int(
                r.prepaid_purchased_credit_amount_cents),
            "total_amount_cents": _int(r.total_amount_cents),
            # Lago: nothing is due on a voided invoice (docs/architecture.md §13)
            "total_due_amount_cents": (0 if r.payment_status == "succeeded"
                                       or r.status == "voided"
                                       else _int(r.total_amount_cents) - offsets.get(r.id, 0)),
            "version_number": VERSION_NUMBER,
            "created_at": iso(r.created_at),
            "updated_at": iso(r.updated_at),
            "finalized_at": iso(r.finalized_at),
            "voided_at": iso(r.voided_at),
            "file_url": None,
            "customer": loads_exact(r.customer_text),
            "subscriptions": subs[r.id],
            "applied_taxes": loads_exact(r.applied_text),
            "fees": fees[r.id],
            "credits": credits[r.id],
        })
    return out


def render_documents(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, str]:
    """The HTML of these invoices, as they are now."""
    rows = conn.execute(text(_INVOICES + " where v.id = any(cast(:ids as bigint[]))"),
                        {"ids": list(invoice_ids)}).all()
    return {row.id: render_html(invoice)
            for row, invoice in zip(rows, invoice_objects(conn, rows), strict=True)}


def render_sealed(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, str]:
    """The HTML kept with these invoices, rendered from the state the seal gives them.

    The document is written by the same UPDATE that finalizes the invoice, and the finalized
    invoice refuses any later change (migration 0006's trigger), so it must be rendered from
    the final state before that state is stored: ``finalized``, finalized (and updated) at
    ``now()``, which in PostgreSQL is this transaction's time, the value the seal writes. The
    number and amounts are already set by then. A document rendered from the draft said
    "Status: draft" on every finalized invoice (migration 0020 repaired those once).
    """
    rows = conn.execute(text(_INVOICES + " where v.id = any(cast(:ids as bigint[]))"),
                        {"ids": list(invoice_ids)}).all()
    sealed_at = iso(conn.execute(text("select now()")).scalar_one())
    documents = {}
    for row, invoice in zip(rows, invoice_objects(conn, rows), strict=True):
        invoice.update({"status": "finalized", "finalized_at": sealed_at,
                        "updated_at": sealed_at,
                        "payment_overdue": (row.payment_status != "succeeded"
                                            and row.payment_due_date < date.today())})
        documents[row.id] = render_html(invoice)
    return documents


_COUNT = "select count(*) from invoices v"  # the rows _INVOICES reads, counted


@dataclass(frozen=True)
class InvoiceQuery:
    """Lago's list filters beyond the CLI's (``GET /invoices``): any of these statuses,
    payment statuses, and an inclusive issuing-date range."""

    statuses: tuple[str, ...] = ()
    payment_statuses: tuple[str, ...] = ()
    issued_from: date | None = None
    issued_to: date | None = None

    def clauses(self) -> tuple[list[str], dict[str, Any]]:
        where: list[str] = []
        params: dict[str, Any] = {}
        for column, values in (("status", self.statuses),
                               ("payment_status", self.payment_statuses)):
            if values:
                where.append(f"v.{column} = any(:{column}es)")
                params[f"{column}es"] = list(values)
        if self.issued_from is not None:
            where.append("v.issuing_date >= :issued_from")
            params["issued_from"] = self.issued_from
        if self.issued_to is not None:
            where.append("v.issuing_date <= :issued_to")
            params["issued_to"] = self.issued_to
        return where, params


def _invoice_filter(
    customer: str | None, subscription: str | None, status: str | None,
    invoice_type: str | None, query: InvoiceQuery | None = None,
) -> tuple[str, dict[str, Any]]:
    """The ``where`` clause (with its parameters) that list_invoices and count_invoices share."""
    where, params = (query or InvoiceQuery()).clauses()
    if invoice_type:
        where.append("v.invoice_type = :invoice_type")
        params["invoice_type"] = invoice_type
    if customer:
        where.append("v.customer_id = (select id from customers where external_id = :customer)")
        params["customer"] = customer
    if subscription:
        # the fees too: a start invoice paid in advance has no closed period yet
        where.append("v.id in (select i.invoice_id from invoice_subscriptions i join"
                     " subscriptions s on s.id = i.subscription_id where s.external_id = :sub"
                     " union select f.invoice_id from invoice_fees f join subscriptions s"
                     " on s.id = f.subscription_id where s.external_id = :sub)")
        params["sub"] = subscription
    if status:
        where.append("v.status = :status")
        params["status"] = status
    return (" where " + " and ".join(where) if where else ""), params


def list_invoices(
    engine: Engine, *, customer: str | None = None, subscription: str | None = None,
    status: str | None = None, limit: int = 1000, invoice_type: str | None = None,
    offset: int = 0, query: InvoiceQuery | None = None,
) -> list[Invoice]:
    """Invoices by issuing date, customer and id; ``limit``/``offset`` page in SQL (the API's
    pages: only the page's invoices are read and built)."""
    condition, params = _invoice_filter(customer, subscription, status, invoice_type, query)
    sql = _INVOICES + condition
    sql += " order by v.issuing_date, v.customer_id, v.id limit :limit offset :offset"
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, "limit": limit, "offset": offset}).all()
        return invoice_objects(conn, rows)


def count_invoices(
    engine: Engine, *, customer: str | None = None, subscription: str | None = None,
    status: str | None = None, invoice_type: str | None = None,
    query: InvoiceQuery | None = None,
) -> int:
    """How many invoices list_invoices would give without a limit (a page's ``total_count``)."""
    condition, params = _invoice_filter(customer, subscription, status, invoice_type, query)
    with engine.connect() as conn:
        return int(conn.execute(text(_COUNT + condition), params).scalar_one())


def find_invoice(engine: Engine, key: str) -> Invoice | None:
    """One invoice by lago_id, number or database id."""
    with engine.connect() as conn:
        query = _INVOICES + " where v.lago_id = :k or v.number = :k"
        params: dict[str, Any] = {"k": key}
        if key.isascii() and key.isdigit() and int(key) < 2**63:  # "²" is a digit too
            query += " or v.id = :n"
            params["n"] = int(key)
        rows = conn.execute(text(query), params).all()
        return invoice_objects(conn, rows)[0] if rows else None


def invoice_standing(engine: Engine, lago_id: str) -> tuple[str, date, str] | None:
    """An invoice's status, issuing day and customer external id (what Lago's finalize and
    refresh calls need to run the close for it); None when there is no such invoice."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "select v.status, v.issuing_date, c.external_id from invoices v"
            " join customers c on c.id = v.customer_id where v.lago_id = :k"),
            {"k": lago_id}).first()
    return None if row is None else (str(row.status), row.issuing_date, str(row.external_id))


def invoice_document(engine: Engine, key: str, kind: str) -> bytes | str | None:
    """The kept HTML or PDF of an invoice. A finalized invoice whose PDF the ``invoice-pdfs``
    flow has not made yet (and a draft) is rendered on the fly from its kept HTML, the same
    document the flow will store; nothing is written here, so a download never races the
    flow."""
    invoice = find_invoice(engine, key)
    if invoice is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(text(
            "select v.id, v.html, p.pdf from invoices v"
            " left join invoice_pdfs p on p.invoice_id = v.id where v.lago_id = :l"),
            {"l": invoice["lago_id"]}).one()
    if kind == "html":
        return row.html or render_html(invoice)
    if row.pdf is not None:
        return bytes(row.pdf)
    return render_pdf(row.html or render_html(invoice))


__all__ = ["PdfUnavailable", "count_invoices", "fee_objects", "find_invoice", "invoice_document",
           "invoice_objects", "list_invoices", "render_documents", "render_sealed"]


class InvoiceError(ValueError):
    """A request about an invoice that cannot be honoured (unknown, or still a draft)."""
