"""Void a finalized invoice and regenerate a voided one (docs/architecture.md §13).

Lago's ``Invoices::VoidService`` and ``Invoices::RegenerateFromVoidedService``; the rules are
pure, in ``tallyflow.models.invoicing.voids``.

Why it converges (§3, invariants 2 and 4):

- A void is one transaction under the customer's row lock and its wallets' balance locks (the
  lock order of the period close and the hourly deductions): the invoice's status turns
  ``voided`` and the wallets get back what they paid toward it, as new ledger rows, or neither
  happens. A crash or kill between the two steps (the failpoint ``invoice_voids.after_void``)
  rolls both back, and a rerun does both. Each correction's idempotency key names the invoice
  and what it reverses (``void:<invoice>:usage:<sub>:<period>:<wallet>``,
  ``void:<invoice>:invoice:<wallet>``), so nothing is given back twice, and a second void is
  refused (``not_voidable``) by the rule and by the database (migration 0021's trigger).
- A voided invoice's periods stay closed: the hourly deductions, the period close and pricing
  treat ``voided`` as they treat ``finalized``. So the credits given back are never deducted
  again for those periods, except by the regenerated invoice, which pays from the wallets as
  at finalization under ``invoice:<new invoice>:<wallet>`` (the keys of ``tasks/invoicing``).
- A regeneration is one transaction too; ``invoices.voided_invoice_id`` is unique, so a voided
  invoice has at most one successor whatever runs concurrently.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.invoicing.voids import (
    InvoiceState,
    Paid,
    Restore,
    VoidRefusal,
    regenerate_refusal,
    regenerated_totals,
    restorations,
    void_refusal,
)
from tallyflow.models.lago.summaries import InvoiceVoidSummary, RegenerateSummary
from tallyflow.models.wallets import InvoiceDue, WalletFunds, plan_invoice_payments
from tallyflow.tasks.invoicing import announce_invoices, render_sealed
from tallyflow.tasks.wallets import USAGE_DEDUCTED, LedgerRow, lock_customers, post


class InvoiceVoidRefused(Exception):
    """A void or regeneration that is refused: ``code`` is the reason (Lago's code where Lago
    has one), the message says it for a person."""

    def __init__(self, code: VoidRefusal, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VoidDone:
    """What a void did: the wallets' corrections, and the wallets Lago does not re-credit
    (no longer active), with what they had paid."""

    invoice_id: int
    number: str
    restored_cents: Decimal
    corrections: list[Restore] = field(default_factory=list)
    not_restored: dict[int, Decimal] = field(default_factory=dict)

    def as_dict(self) -> InvoiceVoidSummary:
        return {"invoice_id": self.invoice_id, "number": self.number, "status": "voided",
                "restored_cents": int(self.restored_cents),
                "corrections": [{"wallet_id": c.wallet_id, "direction": c.direction,
                                 "amount_cents": int(c.amount_cents),
                                 "idempotency_key": c.key} for c in self.corrections],
                "not_restored": {str(w): int(c) for w, c in self.not_restored.items()}}


@dataclass(frozen=True)
class RegenerateDone:
    """The regenerated invoice: its id, number, what the wallets paid and what is due."""

    invoice_id: int
    number: str
    voided_invoice_id: int
    prepaid_credit_amount_cents: Decimal
    total_amount_cents: Decimal

    def as_dict(self) -> RegenerateSummary:
        return {"invoice_id": self.invoice_id, "number": self.number, "status": "finalized",
                "voided_invoice_id": self.voided_invoice_id,
                "prepaid_credit_amount_cents": int(self.prepaid_credit_amount_cents),
                "total_amount_cents": int(self.total_amount_cents)}


_FIND = text(
    """
    select id, customer_id, number, status, invoice_type, coupons_amount_cents,
           credit_notes_amount_cents, progressive_billing_credit_amount_cents,
           (select count(*) from credit_notes n
             where n.invoice_id = v.id and n.credit_status <> 'voided') as credit_notes_issued,
           (select s.id from invoices s where s.voided_invoice_id = v.id) as successor_id
    from invoices v
    where v.lago_id = :k or v.number = :k or v.id = cast(:n as bigint)
    """
)


def _locked(conn: Connection, key: str) -> Any:
    """The invoice named by lago_id, number or id, read after locking its customer (the close's
    lock: no finalization or deduction of this customer moves meanwhile), or refused."""
    params = {"k": key, "n": int(key) if key.isdigit() else None}
    row = conn.execute(_FIND, params).first()
    if row is None:
        raise InvoiceVoidRefused(VoidRefusal.NOT_FOUND, f"no invoice {key!r}")
    conn.execute(text("select id from customers where id = :c for update"), {"c": row.customer_id})
    lock_customers(conn, [row.customer_id])
    return conn.execute(_FIND, params).one()


def _state(row: Any) -> InvoiceState:
    return InvoiceState(row.status, row.invoice_type, Decimal(row.coupons_amount_cents),
                        Decimal(row.credit_notes_amount_cents), row.successor_id,
                        int(row.credit_notes_issued),
                        Decimal(row.progressive_billing_credit_amount_cents))


_PERIODS = text("select subscription_id, period_start from invoice_subscriptions"
                " where invoice_id = :i order by subscription_id, period_start")

_INVOICE_PAID = text(
    """
    select wallet_id,
      sum(case when direction = 'outbound' then amount_cents else -amount_cents end) as cents,
      sum(case when direction = 'outbound' then credits else -credits end) as credits,
      sum(case when direction = 'outbound' then granted_credits else -granted_credits end)
        as granted
    from wallet_transactions
    where source = 'invoice' and status = 'settled' and idempotency_key like :prefix
    group by wallet_id order by wallet_id
    """
)

_ACTIVE = text("select id from wallets where customer_id = :c and status = 'active'")


def _paid(conn: Connection, invoice_id: int) -> list[Paid]:
    """What each wallet paid toward the invoice, net: its periods' hourly usage deductions
    (what the invoice counted as prepaid) and its own posting at finalization."""
    periods = conn.execute(_PERIODS, {"i": invoice_id}).all()
    out = []
    if periods:
        for r in conn.execute(USAGE_DEDUCTED, {"subs": [p.subscription_id for p in periods],
                                                "starts": [p.period_start for p in periods]}):
            out.append(Paid(r.wallet_id, Decimal(r.amount_cents), Decimal(r.credits),
                            Decimal(r.granted_credits), r.subscription_id, r.period_start))
    for r in conn.execute(_INVOICE_PAID, {"prefix": f"invoice:{invoice_id}:%"}):
        out.append(Paid(r.wallet_id, Decimal(r.cents), Decimal(r.credits), Decimal(r.granted)))
    return out


_POSITIONS = text(
    """
    update wallet_usage_positions p set deducted_cents = p.deducted_cents - r.cents,
      revision = p.revision + 1, updated_at = now()
    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[]),
                cast(:cents as numeric[])) as r(sid, ps, cents)
    where p.subscription_id = r.sid and p.period_start = r.ps
    """
)


def _move_positions(conn: Connection, corrections: Sequence[Restore]) -> None:
    """The usage positions of the periods follow their ledger (what the deductions hold for a
    period is the ledger's sum, §3 invariant 4), in the transaction that posts the rows."""
    back: dict[tuple[int, datetime], Decimal] = {}
    for c in corrections:
        if c.subscription_id is not None and c.period_start is not None:
            signed = c.amount_cents if c.direction == "inbound" else -c.amount_cents
            slot = (c.subscription_id, c.period_start)
            back[slot] = back.get(slot, Decimal(0)) + signed
    if back:
        conn.execute(_POSITIONS, {"subs": [k[0] for k in back],
                                  "starts": [k[1] for k in back], "cents": list(back.values())})


def _ledger_row(invoice: Any, c: Restore) -> LedgerRow:
    moved = "restored" if c.direction == "inbound" else "taken back"
    return LedgerRow(
        c.wallet_id, invoice.customer_id, c.direction, "settled", c.source, c.credits,
        c.amount_cents, c.key, granted_credits=c.granted_credits,
        subscription_id=c.subscription_id, period_start=c.period_start,
        note=f"invoice {invoice.number} voided: {moved} {c.amount_cents} cents")


def void_invoice(engine: Engine, key: str, at: datetime) -> VoidDone:
    """Void a finalized invoice (by lago_id, number or id) and give its wallets back what they
    paid toward it, in one transaction (the module docstring says why it converges). Credits
    paid from a wallet that is no longer active are not given back (Lago's
    ``WalletTransactions::RecreditService``); they are reported."""
    with engine.begin() as conn:
        row = _locked(conn, key)
        refusal = void_refusal(_state(row))
        if refusal is not None:
            raise InvoiceVoidRefused(refusal, f"invoice {row.number or row.id} is {row.status}"
                                     f" ({row.invoice_type}): {refusal}")
        conn.execute(text("update invoices set status = 'voided', voided_at = now(),"
                          " updated_at = now() where id = :i"), {"i": row.id})
        failpoint("invoice_voids.after_void", conn)
        active = set(conn.execute(_ACTIVE, {"c": row.customer_id}).scalars())
        paid = _paid(conn, row.id)
        corrections = restorations(row.id, [p for p in paid if p.wallet_id in active])
        post(conn, [_ledger_row(row, c) for c in corrections], at)
        _move_positions(conn, corrections)
        announce_invoices(conn, [row.id], "invoice.voided")  # Lago's SendWebhookJob (§17)
        not_restored: dict[int, Decimal] = {}
        for p in paid:
            if p.wallet_id not in active:
                not_restored[p.wallet_id] = not_restored.get(p.wallet_id, Decimal(0)) \
                    + p.amount_cents
        restored = sum((c.amount_cents if c.direction == "inbound" else -c.amount_cents
                        for c in corrections), Decimal(0))
        return VoidDone(row.id, row.number, restored, corrections, not_restored)


_COPY_INVOICE = text(
    """
    insert into invoices (lago_id, customer_id, invoice_type, issuing_date, status,
      payment_status, currency, fees_amount_cents, taxes_amount_cents, total_amount_cents,
      applied_taxes, customer, billing_entity, finalize_after, net_payment_term,
      payment_due_date, voided_invoice_id)
    select :lago, customer_id, invoice_type, issuing_date, 'draft', 'pending', currency,
      fees_amount_cents, taxes_amount_cents, fees_amount_cents + taxes_amount_cents,
      applied_taxes, customer, billing_entity, finalize_after, net_payment_term,
      payment_due_date, id
    from invoices where id = :old
    returning id
    """
)

_COPY_PERIODS = text(
    """
    insert into invoice_subscriptions (subscription_id, period_start, invoice_id, period_end,
      from_datetime, to_datetime, plan_version_id, regeneration)
    select subscription_id, period_start, :new, period_end, from_datetime, to_datetime,
      plan_version_id, regeneration + 1
    from invoice_subscriptions where invoice_id = :old
    """
)

# every column of a fee but its identity (a new lago_id) and its invoice
_COPY_FEES = text(
    """
    insert into invoice_fees (lago_id, invoice_id, position, subscription_id,
      external_subscription_id, item_type, code, name, invoice_display_name,
      filter_invoice_display_name, grouped_by, charge_id, true_up, units, events_count,
      amount_cents, precise_amount_cents, taxes_rate, taxes_precise_amount_cents,
      taxes_amount_cents, total_amount_cents, applied_taxes, from_datetime, to_datetime,
      event_transaction_id)
    select gen_random_uuid()::text, :new, position, subscription_id,
      external_subscription_id, item_type, code, name, invoice_display_name,
      filter_invoice_display_name, grouped_by, charge_id, true_up, units, events_count,
      amount_cents, precise_amount_cents, taxes_rate, taxes_precise_amount_cents,
      taxes_amount_cents, total_amount_cents, applied_taxes, from_datetime, to_datetime,
      event_transaction_id
    from invoice_fees where invoice_id = :old order by position
    """
)


def _pay(conn: Connection, old: Any, new_id: int, at: datetime) -> Decimal:
    """The regenerated invoice's payment from the wallets, as at finalization: what its
    periods' hourly deductions still hold (nothing, for the wallets the void gave back to),
    then the rest by priority as far as the balances go (``plan_invoice_payments``)."""
    owed = conn.execute(text("select fees_amount_cents + taxes_amount_cents, currency"
                             " from invoices where id = :i"), {"i": new_id}).one()
    taken = tuple((p.wallet_id, p.amount_cents, p.credits, p.granted_credits)
                  for p in _paid(conn, old.id) if p.subscription_id is not None)
    funds = {r.id: WalletFunds(r.id, r.priority, r.created_at, r.rate_amount, r.currency,
                               r.credits_balance, r.granted_credits_balance, r.balance_cents)
             for r in conn.execute(text(
                 "select w.id, w.priority, w.created_at, w.rate_amount, w.currency,"
                 " b.credits_balance, b.granted_credits_balance, b.balance_cents"
                 " from wallets w join wallet_balances b on b.wallet_id = w.id"
                 " where w.customer_id = :c and w.status = 'active'"
                 " and (w.expiration_at is null or w.expiration_at > :at) order by w.id"),
                 {"c": old.customer_id, "at": at})}
    due = InvoiceDue(old.customer_id, owed[1], Decimal(owed[0]), taken)
    [allocation] = plan_invoice_payments([due], funds, {old.customer_id: sorted(funds)})
    paid = due.deducted_cents
    rows = []
    for posting in allocation.postings:
        outbound = posting.direction == "outbound"
        paid += posting.amount_cents if outbound else -posting.amount_cents
        rows.append(LedgerRow(
            posting.wallet_id, old.customer_id, posting.direction, "settled", "invoice",
            posting.credits, posting.amount_cents, f"invoice:{new_id}:{posting.wallet_id}",
            granted_credits=posting.granted_credits,
            note=f"invoice {new_id} (regenerated from {old.number}): "
                 f"{'paid' if outbound else 'refunded'} {posting.amount_cents} cents"))
    post(conn, rows, at)
    return paid


def _next_number(conn: Connection, old: Any) -> tuple[int, str]:
    """The next number of the customer's sequence (no gaps: the customer is locked), with the
    voided invoice's prefix (its issuer's)."""
    seq = int(conn.execute(text("select coalesce(max(sequential_id), 0) + 1 from invoices"
                                " where customer_id = :c"), {"c": old.customer_id}).scalar_one())
    prefix = str(old.number).rsplit("-", 2)[0]
    return seq, f"{prefix}-{old.customer_id:03d}-{seq:03d}"


def regenerate_invoice(engine: Engine, key: str, at: datetime) -> RegenerateDone:
    """A finalized invoice that replaces a voided one (Lago's regenerate from voided, with no
    fee adjusted): its fees, taxes and periods copied as the voided invoice had them (so the
    same plan versions price them, and events that arrived after the voided invoice was
    finalized still do not count: ``tallyflow invoices late-usage`` lists them), a new number,
    and its prepaid credits paid from the wallets anew; one transaction."""
    with engine.begin() as conn:
        old = _locked(conn, key)
        refusal = regenerate_refusal(_state(old))
        if refusal is not None:
            raise InvoiceVoidRefused(refusal, f"invoice {old.number or old.id} is {old.status}:"
                                     f" {refusal}")
        new_id = int(conn.execute(_COPY_INVOICE, {"lago": str(uuid.uuid4()),
                                                  "old": old.id}).scalar_one())
        conn.execute(_COPY_PERIODS, {"new": new_id, "old": old.id})
        conn.execute(_COPY_FEES, {"new": new_id, "old": old.id})
        failpoint("invoice_voids.after_regenerated_draft", conn)
        paid = _pay(conn, old, new_id, at)
        fees = conn.execute(text("select fees_amount_cents, taxes_amount_cents from invoices"
                                 " where id = :i"), {"i": new_id}).one()
        prepaid, total = regenerated_totals(Decimal(fees[0]), Decimal(fees[1]), paid)
        seq, number = _next_number(conn, old)
        conn.execute(text(
            "update invoices set prepaid_credit_amount_cents = :p, total_amount_cents = :t,"
            " sequential_id = :s, number = :n, payment_status = :ps where id = :i"),
            {"p": prepaid, "t": total, "s": seq, "n": number, "i": new_id,
             "ps": "pending" if total > 0 else "succeeded"})
        _seal(conn, [new_id])
        announce_invoices(conn, [new_id])  # invoice.created, as any finalized invoice
        return RegenerateDone(new_id, number, old.id, prepaid, total)


def _seal(conn: Connection, ids: Sequence[int]) -> None:
    """Finalize with the documents of the final state, as the period close seals."""
    documents = render_sealed(conn, ids)
    for invoice_id in ids:
        conn.execute(text("update invoices set status = 'finalized', finalized_at = now(),"
                          " html = :h, updated_at = now() where id = :i"),
                     {"h": documents[invoice_id], "i": invoice_id})
