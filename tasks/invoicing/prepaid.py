"""Prepaid credits applied at finalization, and invoice numbers without gaps."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.models.wallets import (
    InvoiceDue,
    WalletFunds,
    granted_cents,
    plan_invoice_payments,
)
from tallyflow.tasks.invoicing.inputs import _Group
from tallyflow.tasks.invoicing.watermark import invoice_prefix
from tallyflow.tasks.wallets import USAGE_DEDUCTED, LedgerRow, post

_FUNDS = text(
    """
    select w.id, w.customer_id, w.priority, w.created_at, w.rate_amount, w.currency,
           b.credits_balance, b.granted_credits_balance, b.balance_cents
    from wallets w join wallet_balances b on b.wallet_id = w.id
    where w.customer_id = any(cast(:ids as bigint[])) and w.status = 'active'
      and (w.expiration_at is null or w.expiration_at > :at)
    order by w.id
    """
)


def _prepaid(
    conn: Connection, groups: Sequence[_Group], ids: Mapping[tuple[int, date], int],
    at: datetime, shown: Mapping[tuple[int, date], Decimal] | None = None,
) -> tuple[dict[tuple[int, date], Decimal], dict[tuple[int, date], Decimal]]:
    """What the wallets paid toward each invoice: the hourly usage deductions already posted
    for its periods, plus, for the invoices being finalized, the last deduction of the rest
    (subscription fee, true-ups, taxes, usage not deducted yet) as far as the balances go, by
    the usual priority; or, when the hourly deductions took more than the invoice owes, the
    excess back. The postings of the whole batch go out in one statement. Second: the money
    of the granted credits among them, unrounded (``models.wallets.prepaid_breakdown``).

    ``shown``: per invoice, the hourly deductions its periods' progressive invoices already
    showed as prepaid (``progressive_credit.py``, §20). They paid those invoices, not this
    one: the invoice is asked for that much more against the deductions (so the last
    deduction, or the excess given back, is computed on what this invoice still owes) and
    its prepaid credits leave it out."""
    shown = shown or {}
    pairs = [(s.id, p.period_start) for g in groups for s, p in g.items]
    taken: dict[tuple[int, datetime], list[Any]] = defaultdict(list)
    if pairs:
        for r in conn.execute(USAGE_DEDUCTED, {"subs": [p[0] for p in pairs],
                                                "starts": [p[1] for p in pairs]}):
            taken[(r.subscription_id, r.period_start)].append(r)
    funds: dict[int, WalletFunds] = {}
    wallets_of: dict[int, list[int]] = defaultdict(list)
    due = [g for g in groups if g.due]
    if due:
        for r in conn.execute(_FUNDS, {"ids": sorted({g.customer.id for g in due}), "at": at}):
            funds[r.id] = WalletFunds(r.id, r.priority, r.created_at, r.rate_amount, r.currency,
                                      r.credits_balance, r.granted_credits_balance,
                                      r.balance_cents)
            wallets_of[r.customer_id].append(r.id)
    invoices = {
        g.key: InvoiceDue(
            g.customer.id, g.amounts.currency,
            # what is left after the credit notes (tasks/invoicing/credit_notes.py)
            Decimal(g.amounts.sub_total_including_taxes_amount_cents
                    - g.amounts.credit_notes_amount_cents) + shown.get(g.key, Decimal(0)),
            tuple((r.wallet_id, r.amount_cents, r.credits, r.granted_credits)
                  for s, p in g.items for r in taken.get((s.id, p.period_start), [])),
        )
        for g in groups
    }
    prepaid = {key: invoice.deducted_cents - shown.get(key, Decimal(0))
               for key, invoice in invoices.items()}
    granted = {key: sum((granted_cents(cents, credits, part)
                         for _, cents, credits, part in invoice.taken), Decimal(0))
               for key, invoice in invoices.items()}
    payments = plan_invoice_payments([invoices[g.key] for g in due], funds, wallets_of)
    ledger: list[LedgerRow] = []
    for group, allocation in zip(due, payments, strict=True):
        invoice_id = ids[group.key]
        for posting in allocation.postings:
            outbound = posting.direction == "outbound"
            prepaid[group.key] += posting.amount_cents if outbound else -posting.amount_cents
            part = granted_cents(posting.amount_cents, posting.credits, posting.granted_credits)
            granted[group.key] += part if outbound else -part
            ledger.append(LedgerRow(
                posting.wallet_id, group.customer.id, posting.direction, "settled", "invoice",
                posting.credits, posting.amount_cents, f"invoice:{invoice_id}:{posting.wallet_id}",
                granted_credits=posting.granted_credits,
                note=f"invoice {invoice_id}: {'paid' if outbound else 'refunded'}"
                     f" {posting.amount_cents} cents at finalization",
            ))
    post(conn, ledger, at)
    return prepaid, granted


def _numbers(conn: Connection, groups: Sequence[_Group]) -> dict[tuple[int, date], tuple[int, str]]:
    """Numbers for the invoices being finalized, given only now (no gaps: the customers are
    locked and each sequence continues from the customer's last finalized invoice)."""
    if not groups:
        return {}
    last = {int(r.customer_id): int(r.seq) for r in conn.execute(text(
        "select customer_id, coalesce(max(sequential_id), 0) as seq from invoices"
        " where customer_id = any(cast(:ids as bigint[])) group by customer_id"),
        {"ids": sorted({g.customer.id for g in groups})})}
    out: dict[tuple[int, date], tuple[int, str]] = {}
    for group in sorted(groups, key=lambda g: g.key):
        seq = last.get(group.customer.id, 0) + 1
        last[group.customer.id] = seq
        entity = group.customer.entity
        prefix = (entity.prefix if entity and entity.prefix else invoice_prefix())
        out[group.key] = (seq, f"{prefix}-{group.customer.id:03d}-{seq:03d}")
    return out
