"""Credit notes consumed at finalization: after taxes, before prepaid credits.

Lago's order (``Invoices::CalculateFeesService``; ``Credits::CreditNoteService``): an invoice
being finalized takes what it owes after taxes from the customer's credit notes with credit
left, oldest first (``tallyflow.models.credit_notes.consume``); the wallets then pay what is
left. It runs in the finalizing transaction, under the customer row lock the close holds (the
same lock a credit note is issued and voided under), so the consumption rows, the notes'
balances and the invoice's ``credit_notes_amount_cents`` commit with the invoice or not at all;
a finalized invoice is never written again, so a rerun consumes nothing twice. Drafts consume
nothing (their amounts change until they are final).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date

from sqlalchemy import Connection, text

from tallyflow.models.credit_notes import Available, consume
from tallyflow.tasks.invoicing.inputs import _Group

_AVAILABLE = text(
    """
    select id, customer_id, currency, balance_amount_cents from credit_notes
    where customer_id = any(cast(:ids as bigint[])) and credit_status = 'available'
      and balance_amount_cents > 0
    order by customer_id, id
    """
)

_CONSUME = text(
    """
    with taken as (
      insert into credit_note_credits (credit_note_id, invoice_id, amount_cents)
      select * from unnest(cast(:notes as bigint[]), cast(:invoices as bigint[]),
                           cast(:cents as numeric[]))
      returning credit_note_id, amount_cents
    )
    update credit_notes n set
      balance_amount_cents = n.balance_amount_cents - t.amount_cents,
      credit_status = case when n.balance_amount_cents = t.amount_cents then 'consumed'
                           else n.credit_status end,
      updated_at = now()
    from (select credit_note_id, sum(amount_cents) as amount_cents from taken
          group by credit_note_id) t
    where n.id = t.credit_note_id
    """
)


def consume_credit_notes(
    conn: Connection, live: Sequence[_Group], ids: Mapping[tuple[int, date], int]
) -> dict[tuple[int, date], int]:
    """Consume credit notes for the invoices of ``live`` being finalized (``due``), and set
    their amounts' ``credit_notes_amount_cents``; returns it per invoice. A note serves
    invoices in the order of their keys, each in the invoice's currency only."""
    groups = [g for g in live if g.due]
    if not groups:
        return {}
    left: dict[int, list[tuple[str, Available]]] = {}
    for r in conn.execute(_AVAILABLE, {"ids": sorted({g.customer.id for g in groups})}):
        left.setdefault(int(r.customer_id), []).append(
            (r.currency, Available(int(r.id), int(r.balance_amount_cents))))
    out: dict[tuple[int, date], int] = {}
    notes, invoices, cents = [], [], []
    for group in sorted(groups, key=lambda g: g.key):
        mine = left.get(group.customer.id, [])
        owed = group.amounts.sub_total_including_taxes_amount_cents
        usable = [a for c, a in mine if c == group.amounts.currency]
        taken = dict(consume(owed, usable))
        out[group.key] = sum(taken.values())
        group.amounts = replace(group.amounts, credit_notes_amount_cents=out[group.key])
        for note_id, amount in taken.items():
            notes.append(note_id)
            invoices.append(ids[group.key])
            cents.append(amount)
        left[group.customer.id] = [
            (c, Available(a.credit_note_id,
                          a.balance_amount_cents - taken.get(a.credit_note_id, 0)))
            for c, a in mine]
    if notes:
        conn.execute(_CONSUME, {"notes": notes, "invoices": invoices, "cents": cents})
    return out
