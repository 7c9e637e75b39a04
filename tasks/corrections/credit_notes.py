"""Credit notes: issue, estimate, void, read (Lago's ``/credit_notes``).

The amounts are pure (``tallyflow.models.credit_notes``); this module reads what they need and
writes the result. Why it is exactly once (docs/architecture.md §3, invariants 2 and 4; §14):

- A note is issued in one transaction under the customer's row lock (the lock the period close
  takes, so no invoice consumes a balance being written), then its wallets' balance rows: the
  note, its items, its document and its wallet corrections commit together or not at all, so a
  kill between the note and its wallet correction leaves neither.
- Every request has an idempotency key (the caller's, else a fresh one): a retried request finds
  the note it made. Each wallet correction is a ledger row keyed
  ``credit_note:<invoice id>:<note sequence>:<wallet id>``.
- An issued note never changes but for its balance and statuses (triggers, migration 0022).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models import number_rule
from tallyflow.models.credit_notes import (
    REASONS,
    Amounts,
    CreditableFee,
    CreditNoteRefused,
    EarlierNote,
    FeePaid,
    FeeTax,
    InvoiceState,
    InvoiceTax,
    Request,
    compute,
    estimate,
    termination_days,
    termination_request,
    wallet_refunds,
)
from tallyflow.models.exact_json import loads_exact
from tallyflow.models.invoicing import trial_end
from tallyflow.models.lago.resources import (
    CreditNote,
    CreditNoteAppliedTax,
    CreditNoteEstimate,
    CreditNoteItem,
)
from tallyflow.models.lago.times import iso, iso_z
from tallyflow.models.rating.money import plain_text
from tallyflow.models.rating.periods import period_containing
from tallyflow.models.wallets import credits_for
from tallyflow.tasks.invoicing import (
    fee_objects,
    render_credit_note_html,
    render_pdf,
)
from tallyflow.tasks.wallets import LedgerRow, lock_customers, post
from tallyflow.tasks.webhooks import enqueue

__all__ = ["REASONS", "CreditNoteRefused", "Issue", "count_credit_notes",
           "credit_note_document", "estimate_credit_note", "find_credit_note",
           "issue_credit_note", "issue_termination_credit_note", "list_credit_notes",
           "void_credit_note"]


@dataclass(frozen=True)
class Issue:
    """A request to issue a credit note on an invoice (its lago_id, number or id)."""

    invoice: str
    request: Request
    description: str | None = None
    idempotency_key: str | None = None


_INVOICE = """
    select v.id, v.lago_id, v.number, v.customer_id, v.invoice_type, v.status,
           v.payment_status, v.currency, v.fees_amount_cents, v.coupons_amount_cents,
           v.total_amount_cents, v.prepaid_credit_amount_cents,
           v.applied_taxes::text as applied_text, v.customer::text as customer_text,
           v.billing_entity::text as entity_text
    from invoices v
"""


def _invoice_row(conn: Connection, key: str) -> Any:
    query = _INVOICE + " where v.lago_id = :k or v.number = :k"
    params: dict[str, Any] = {"k": key}
    if key.isdigit():
        query += " or v.id = :n"
        params["n"] = int(key)
    row = conn.execute(text(query), params).first()
    if row is None:
        raise CreditNoteRefused({"invoice": ["not_found"]}, status=404)
    return row


def _lock(conn: Connection, customer_id: int) -> None:
    """The close's lock order: the customer row, then its wallets' balance rows."""
    conn.execute(text("select id from customers where id = :c for update"), {"c": customer_id})
    lock_customers(conn, [customer_id])


def _state(conn: Connection, invoice: Any) -> InvoiceState:
    fees = tuple(
        CreditableFee(int(r.id), r.lago_id, int(r.amount_cents),
                      tuple(FeeTax(t["tax_code"], t["tax_name"], Decimal(str(t["tax_rate"])))
                            for t in loads_exact(r.taxes_text)),
                      credited_cents=int(r.credited))
        for r in conn.execute(text(
            """
            select f.id, f.lago_id, f.amount_cents, f.applied_taxes::text as taxes_text,
                   coalesce((select sum(i.amount_cents) from credit_note_items i
                             where i.fee_id = f.id), 0) as credited
            from invoice_fees f where f.invoice_id = :i order by f.position
            """), {"i": invoice.id}))
    # Tallyflow's invoices carry no coupons yet: each tax's base is its fees' amount
    taxes = tuple(
        InvoiceTax(t["tax_code"], t["tax_name"], Decimal(str(t["tax_rate"])),
                   int(t["fees_amount_cents"]), int(t["fees_amount_cents"]))
        for t in loads_exact(invoice.applied_text))
    earlier = tuple(
        EarlierNote(int(r.credit_amount_cents), int(r.refund_amount_cents),
                    int(r.offset_amount_cents), int(r.taxes_amount_cents),
                    Decimal(r.precise_taxes_amount_cents), int(r.wallet_refund_amount_cents))
        for r in conn.execute(text(
            "select * from credit_notes where invoice_id = :i order by id"), {"i": invoice.id}))
    return InvoiceState(
        currency=invoice.currency, invoice_type=invoice.invoice_type, status=invoice.status,
        fees=fees, taxes=taxes, fees_amount_cents=int(invoice.fees_amount_cents),
        total_amount_cents=int(invoice.total_amount_cents),
        prepaid_credit_amount_cents=int(invoice.prepaid_credit_amount_cents),
        externally_paid=invoice.payment_status == "succeeded", earlier=earlier,
        coupons_amount_cents=int(invoice.coupons_amount_cents))


_PAID_BY_WALLET = text(
    """
    select t.wallet_id,
           sum(case when t.direction = 'outbound' then t.amount_cents
                    else -t.amount_cents end) as cents
    from wallet_transactions t join wallets w on w.id = t.wallet_id
    where w.customer_id = :c and w.status = 'active' and t.status = 'settled'
      and ((t.source = 'usage' and (t.subscription_id, t.period_start) in (
              select subscription_id, period_start from invoice_subscriptions
              where invoice_id = :i))
           or t.idempotency_key = any(cast(:keys as text[])))
    group by t.wallet_id
    order by t.wallet_id
    """
)


def _paid_by_wallet(conn: Connection, invoice: Any, notes: int) -> list[tuple[int, int]]:
    """What each active wallet paid toward the invoice, net of earlier corrections: the hourly
    usage deductions of its periods, its finalization payment (``invoice:<id>:<wallet>``) and
    the corrections of its earlier notes (``credit_note:<id>:<seq>:<wallet>``)."""
    wallets = [int(w) for w in conn.execute(text(
        "select id from wallets where customer_id = :c"), {"c": invoice.customer_id}).scalars()]
    keys = [f"invoice:{invoice.id}:{w}" for w in wallets] + [
        f"credit_note:{invoice.id}:{seq}:{w}" for seq in range(1, notes + 1) for w in wallets]
    rows = conn.execute(_PAID_BY_WALLET, {"c": invoice.customer_id, "i": invoice.id,
                                          "keys": keys})
    return [(int(r.wallet_id), int(r.cents)) for r in rows if r.cents > 0]


def _issuing_date(invoice: Any, at: datetime) -> date:
    """Lago: today in the customer's time zone (the accounting date)."""
    zone = (loads_exact(invoice.customer_text) or {}).get("timezone") or "UTC"
    return at.astimezone(ZoneInfo(zone)).date()


def _json(value: Any) -> str:
    return number_rule.dumps(value, default=str).decode()


_INSERT = text(
    """
    insert into credit_notes (lago_id, idempotency_key, invoice_id, customer_id, sequential_id,
      number, issuing_date, reason, description, currency, credit_status, refund_status,
      total_amount_cents, precise_total_amount_cents, taxes_amount_cents,
      precise_taxes_amount_cents, sub_total_excluding_taxes_amount_cents,
      coupons_adjustment_amount_cents, precise_coupons_adjustment_amount_cents, taxes_rate,
      credit_amount_cents, refund_amount_cents, offset_amount_cents, balance_amount_cents,
      wallet_refund_amount_cents, applied_taxes, html)
    values (:lago_id, :key, :invoice_id, :customer_id, :seq, :number, :issuing_date, :reason,
      :description, :currency, 'available', :refund_status, :total, :precise_total, :taxes,
      :precise_taxes, :sub_total, :coupons, :precise_coupons, :taxes_rate, :credit, :refund,
      :offset, :credit, :wallet_refund, cast(:applied as jsonb), '')
    returning id
    """
)


def _applied(amounts: Amounts, currency: str) -> list[CreditNoteAppliedTax]:
    return [{"tax_name": t.name, "tax_code": t.code, "tax_rate": plain_text(t.rate),
             "tax_description": None, "base_amount_cents": t.base_amount_cents,
             "amount_cents": t.amount_cents, "amount_currency": currency}
            for t in amounts.taxes.applied]


def _write(conn: Connection, issue: Issue, invoice: Any, amounts: Amounts, key: str,
           refunds: Sequence[tuple[int, int]], at: datetime) -> int:
    """The note, its items and its wallet corrections; then its document (it needs the
    note's row)."""
    seq = int(conn.execute(text(
        "select coalesce(max(sequential_id), 0) + 1 from credit_notes where invoice_id = :i"),
        {"i": invoice.id}).scalar_one())
    back = sum(c for _, c in refunds)
    refund_status = (None if amounts.refund_amount_cents == 0 else
                     "succeeded" if back == amounts.refund_amount_cents else "pending")
    note_id = int(conn.execute(_INSERT, {
        "lago_id": str(uuid.uuid4()), "key": key, "invoice_id": invoice.id,
        "customer_id": invoice.customer_id, "seq": seq, "number": f"{invoice.number}-CN{seq:03d}",
        "issuing_date": _issuing_date(invoice, at), "reason": issue.request.reason,
        "description": issue.description, "currency": invoice.currency,
        "refund_status": refund_status, "total": amounts.total_amount_cents,
        "precise_total": amounts.precise_total_amount_cents,
        "taxes": amounts.taxes_amount_cents, "precise_taxes": amounts.precise_taxes_amount_cents,
        "sub_total": amounts.sub_total_excluding_taxes_amount_cents,
        "coupons": amounts.coupons_adjustment_amount_cents,
        "precise_coupons": amounts.taxes.coupons_adjustment_amount_cents,
        "taxes_rate": amounts.taxes.taxes_rate, "credit": amounts.credit_amount_cents,
        "refund": amounts.refund_amount_cents, "offset": amounts.offset_amount_cents,
        "wallet_refund": back, "applied": _json(_applied(amounts, invoice.currency)),
    }).scalar_one())
    conn.execute(text(
        """
        insert into credit_note_items (lago_id, credit_note_id, position, fee_id, amount_cents,
          precise_amount_cents)
        select * from unnest(cast(:lago as text[]), cast(:note as bigint[]),
          cast(:pos as integer[]), cast(:fee as bigint[]), cast(:cents as numeric[]),
          cast(:precise as numeric[]))
        """), {"lago": [str(uuid.uuid4()) for _ in amounts.items],
               "note": [note_id] * len(amounts.items),
               "pos": list(range(len(amounts.items))),
               "fee": [i.fee.fee_id for i in amounts.items],
               "cents": [i.amount_cents for i in amounts.items],
               "precise": [i.precise_amount_cents for i in amounts.items]})
    failpoint("credit_notes.before_wallet_correction", conn)
    _correct_wallets(conn, invoice, seq, refunds, at)
    return note_id


def _correct_wallets(conn: Connection, invoice: Any, seq: int,
                     refunds: Sequence[tuple[int, int]], at: datetime) -> None:
    if not refunds:
        return
    rates = {int(r.id): r for r in conn.execute(text(
        "select id, rate_amount, currency from wallets where id = any(cast(:ids as bigint[]))"),
        {"ids": [w for w, _ in refunds]})}
    post(conn, [LedgerRow(
        wallet, invoice.customer_id, "inbound", "settled", "invoice",
        credits_for(Decimal(cents), rates[wallet].rate_amount, rates[wallet].currency),
        Decimal(cents), f"credit_note:{invoice.id}:{seq}:{wallet}",
        note=f"credit note {invoice.number}-CN{seq:03d}: {cents} cents refunded to the wallet",
    ) for wallet, cents in refunds], at)


def issue_credit_note(engine: Engine, issue: Issue, at: datetime | None = None) -> CreditNote:
    """Issue a credit note (Lago's ``POST /credit_notes``); a retried request (same
    idempotency key) returns the note already issued. Raises :class:`CreditNoteRefused`."""
    at = at or datetime.now(UTC)
    key = issue.idempotency_key or str(uuid.uuid4())
    with engine.begin() as conn:
        invoice = _invoice_row(conn, issue.invoice)
        _lock(conn, invoice.customer_id)
        done = conn.execute(text(
            "select id, invoice_id from credit_notes where idempotency_key = :k"),
            {"k": key}).first()
        if done is not None:
            if done.invoice_id != invoice.id:
                raise CreditNoteRefused({"idempotency_key": ["already_used"]})
            return _objects(conn, [done.id])[0]
        state = _state(conn, invoice)
        amounts = compute(issue.request, state)
        refunds = wallet_refunds(amounts.refund_amount_cents, state,
                                 _paid_by_wallet(conn, invoice, len(state.earlier)))
        note_id = _write(conn, issue, invoice, amounts, key, refunds, at)
        [note] = _objects(conn, [note_id])
        html = render_credit_note_html(note)
        conn.execute(text("update credit_notes set html = :h where id = :i and html = ''"),
                     {"h": html, "i": note_id})
        # the customer's systems hear of it from the outbox, in this transaction (§17)
        enqueue(conn, "credit_note.created", "credit_note", note,
                key=f"credit_note.created:{note['lago_id']}")
    return note


_NOTES = """
    select n.*, n.applied_taxes::text as applied_text, v.lago_id as invoice_lago_id,
           v.number as invoice_number, v.billing_entity::text as entity_text
    from credit_notes n join invoices v on v.id = n.invoice_id
"""


def _objects(conn: Connection, ids: Sequence[int]) -> list[CreditNote]:
    """Lago credit note objects, with items (and their fees) and applied taxes."""
    rows = conn.execute(text(_NOTES + " where n.id = any(cast(:ids as bigint[]))"
                             " order by n.id"), {"ids": list(ids)}).all()
    items: dict[int, list[Any]] = {r.id: [] for r in rows}
    for r in conn.execute(text(
            "select * from credit_note_items where credit_note_id = any(cast(:ids as bigint[]))"
            " order by credit_note_id, position"), {"ids": list(ids)}):
        items[r.credit_note_id].append(r)
    fees = fee_objects(conn, [i.fee_id for its in items.values() for i in its])
    by_id = {r.id: r for r in rows}
    return [_object(by_id[i], items[i], fees) for i in ids if i in by_id]


def _object(r: Any, items: Sequence[Any], fees: dict[int, Any]) -> CreditNote:
    entity = loads_exact(r.entity_text) or {}
    applied: list[CreditNoteAppliedTax] = [
        {"lago_credit_note_id": r.lago_id, "tax_name": t["tax_name"], "tax_code": t["tax_code"],
         "tax_rate": t["tax_rate"], "tax_description": None,
         "base_amount_cents": int(t["base_amount_cents"]), "amount_cents": int(t["amount_cents"]),
         "amount_currency": t["amount_currency"]} for t in loads_exact(r.applied_text)]
    note_items: list[CreditNoteItem] = [
        {"lago_id": i.lago_id, "amount_cents": int(i.amount_cents),
         "precise_amount_cents": plain_text(Decimal(i.precise_amount_cents)),
         "amount_currency": r.currency, "fee": fees[int(i.fee_id)]} for i in items]
    return {
        "lago_id": r.lago_id, "billing_entity_code": entity.get("code"),
        "sequential_id": int(r.sequential_id), "number": r.number,
        "lago_invoice_id": r.invoice_lago_id, "invoice_number": r.invoice_number,
        "issuing_date": r.issuing_date.isoformat(), "credit_status": r.credit_status,
        "refund_status": r.refund_status, "reason": r.reason, "description": r.description,
        "currency": r.currency, "total_amount_cents": int(r.total_amount_cents),
        "precise_total_amount_cents": plain_text(Decimal(r.precise_total_amount_cents)),
        "taxes_amount_cents": int(r.taxes_amount_cents),
        "precise_taxes_amount_cents": plain_text(Decimal(r.precise_taxes_amount_cents)),
        "sub_total_excluding_taxes_amount_cents": int(r.sub_total_excluding_taxes_amount_cents),
        "balance_amount_cents": int(r.balance_amount_cents),
        "credit_amount_cents": int(r.credit_amount_cents),
        "refund_amount_cents": int(r.refund_amount_cents),
        "offset_amount_cents": int(r.offset_amount_cents),
        "coupons_adjustment_amount_cents": int(r.coupons_adjustment_amount_cents),
        "taxes_rate": plain_text(Decimal(r.taxes_rate)),
        "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
        "file_url": None, "xml_url": None, "self_billed": False,
        "wallet_refund_amount_cents": int(r.wallet_refund_amount_cents),
        "voided_at": iso_z(r.voided_at), "items": note_items, "applied_taxes": applied,
    }


_FILTER = """
    from credit_notes n join invoices v on v.id = n.invoice_id
    where (cast(:c as text) is null
           or n.customer_id = (select id from customers where external_id = :c))
      and (cast(:i as text) is null or v.lago_id = :i or v.number = :i)
"""


def list_credit_notes(engine: Engine, *, customer: str | None = None,
                      invoice: str | None = None, limit: int | None = None,
                      offset: int = 0) -> list[CreditNote]:
    """Credit notes, newest first (Lago's index order), paged in SQL."""
    with engine.connect() as conn:
        ids = list(conn.execute(text(
            "select n.id" + _FILTER + " order by n.id desc limit :limit offset :offset"),
            {"c": customer, "i": invoice, "limit": limit, "offset": offset}).scalars())
        return _objects(conn, ids)


def count_credit_notes(engine: Engine, *, customer: str | None = None,
                       invoice: str | None = None) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select count(*)" + _FILTER),
                                {"c": customer, "i": invoice}).scalar_one())


def _note_id(conn: Connection, key: str) -> int | None:
    query = "select id from credit_notes where lago_id = :k or number = :k"
    params: dict[str, Any] = {"k": key}
    if key.isdigit():
        query += " or id = :n"
        params["n"] = int(key)
    found = conn.execute(text(query), params).scalar()
    return None if found is None else int(found)


def find_credit_note(engine: Engine, key: str) -> CreditNote | None:
    """One credit note by lago_id, number or database id."""
    with engine.connect() as conn:
        found = _note_id(conn, key)
        return None if found is None else _objects(conn, [found])[0]


def void_credit_note(engine: Engine, key: str, at: datetime | None = None) -> CreditNote:
    """Lago's ``VoidService``: the credit left is voided (balance 0, ``credit_status``
    voided); refused (405 ``no_voidable_amount``) when nothing is left or it is voided. What
    was refunded or offset stays so: voiding takes back the unused credit only."""
    at = at or datetime.now(UTC)
    with engine.begin() as conn:
        found = _note_id(conn, key)
        if found is None:
            raise CreditNoteRefused({"credit_note": ["not_found"]}, status=404)
        customer = conn.execute(text("select customer_id from credit_notes where id = :i"),
                                {"i": found}).scalar_one()
        _lock(conn, int(customer))
        voided = conn.execute(text(
            "update credit_notes set credit_status = 'voided', balance_amount_cents = 0,"
            " voided_at = :at, updated_at = now()"
            " where id = :i and credit_status <> 'voided' and balance_amount_cents > 0"
            " returning id"), {"i": found, "at": at}).first()
        if voided is None:
            raise CreditNoteRefused({"credit_note": ["no_voidable_amount"]}, status=405)
        return _objects(conn, [found])[0]


def estimate_credit_note(engine: Engine, invoice_key: str,
                         items: Sequence[tuple[str, Decimal]]) -> CreditNoteEstimate:
    """Lago's ``POST /credit_notes/estimate``: nothing is written."""
    with engine.connect() as conn:
        invoice = _invoice_row(conn, invoice_key)
        result = estimate(items, _state(conn, invoice))
    amounts = result.amounts
    return {
        "lago_invoice_id": invoice.lago_id, "invoice_number": invoice.number,
        "currency": invoice.currency, "taxes_amount_cents": amounts.taxes_amount_cents,
        "precise_taxes_amount_cents": plain_text(amounts.precise_taxes_amount_cents),
        "sub_total_excluding_taxes_amount_cents":
            amounts.sub_total_excluding_taxes_amount_cents,
        "max_creditable_amount_cents": result.max_creditable_amount_cents,
        "max_refundable_amount_cents": result.max_refundable_amount_cents,
        "max_offsettable_amount_cents": result.max_offsettable_amount_cents,
        "coupons_adjustment_amount_cents": amounts.coupons_adjustment_amount_cents,
        "precise_coupons_adjustment_amount_cents":
            plain_text(amounts.taxes.coupons_adjustment_amount_cents),
        "taxes_rate": plain_text(amounts.taxes.taxes_rate),
        "items": [{"lago_fee_id": i.fee.lago_id, "amount_cents": i.amount_cents}
                  for i in amounts.items],
        "applied_taxes": _applied(amounts, invoice.currency),
    }


def credit_note_document(engine: Engine, key: str, kind: str) -> bytes | str | None:
    """The kept HTML of a credit note, or its PDF made from it (WeasyPrint, on demand)."""
    with engine.connect() as conn:
        found = _note_id(conn, key)
        if found is None:
            return None
        html = str(conn.execute(text("select html from credit_notes where id = :i"),
                                {"i": found}).scalar_one())
    return html if kind == "html" else render_pdf(html)


_LAST_ADVANCE_FEE = text(
    """
    select f.id, f.lago_id, f.precise_amount_cents + f.taxes_precise_amount_cents as precise,
           v.lago_id as invoice_key, v.status, v.fees_amount_cents + v.taxes_amount_cents
             - v.coupons_amount_cents as sub_total_incl,
           s.terminated_at, s.billing_time, s.subscription_at as anchor_at,
           coalesce(s.started_at, s.subscription_at) as starts_at, c.timezone,
           p.interval, p.amount_cents as plan_amount_cents, p.trial_period, p.pay_in_advance
    from subscriptions s
    join customers c on c.id = s.customer_id
    join plans p on p.id = s.plan_id
    join invoice_fees f on f.subscription_id = s.id and f.item_type = 'subscription'
    join invoices v on v.id = f.invoice_id
    where s.id = :s and f.from_datetime <= s.terminated_at and s.terminated_at <= f.to_datetime
    order by f.to_datetime desc, f.id desc
    limit 1
    """
)


def issue_termination_credit_note(engine: Engine, subscription_id: int, choice: str, *,
                                  upgrade: bool = False,
                                  at: datetime | None = None) -> CreditNote | None:
    """Lago's ``CreateFromTermination``: the credit note for the unused days of the fee a
    terminated (or upgraded) row of a plan paid in advance paid for its last period
    (``choice``: ``credit``, ``refund`` or ``skip``). None when there is nothing to credit: no
    such fee, a plan in arrears, a fee on a draft invoice, nothing unused. Its idempotency key
    is the fee's, so a rerun (or a crash before it) issues it once."""
    with engine.connect() as conn:
        row = conn.execute(_LAST_ADVANCE_FEE, {"s": subscription_id}).first()
        if (row is None or choice == "skip" or not row.pay_in_advance
                or row.status != "finalized"):
            return None
        key = f"termination:{row.lago_id}"
        done = conn.execute(text("select id from credit_notes where idempotency_key = :k"),
                            {"k": key}).scalar()
        if done is not None:  # a rerun: the note already issued
            return _objects(conn, [int(done)])[0]
        invoice = _invoice_row(conn, row.invoice_key)
        state = _state(conn, invoice)
    fee = state.fee(row.lago_id)
    assert fee is not None
    period = period_containing(row.terminated_at, row.interval, row.billing_time,
                               row.starts_at, row.timezone, anchor_at=row.anchor_at)
    zone = ZoneInfo(row.timezone or "UTC")
    trial = trial_end(row.starts_at, row.trial_period)
    days = termination_days(
        max(period.start_date, row.starts_at.astimezone(zone).date()), period.end_date,
        row.terminated_at.astimezone(zone).date(), upgrade=upgrade,
        trial_end=trial.astimezone(zone).date() if trial is not None else None)
    request = termination_request(
        FeePaid(fee, Decimal(row.precise), int(row.sub_total_incl)), state,
        plan_amount_cents=Decimal(row.plan_amount_cents),
        period_days=(period.end_date - period.start_date).days + 1, days=days,
        choice=choice, upgrade=upgrade)
    if request is None:
        return None
    return issue_credit_note(engine, Issue(row.invoice_key, request, idempotency_key=key), at)
