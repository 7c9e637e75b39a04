"""What a period-end invoice deducts for the progressive invoices of its periods
(``progressive_billing_credit_amount_cents``; lago-api ``app/services/credits/
progressive_billing_service.rb``, ``app/services/subscriptions/progressive_billed_amount.rb``;
docs/architecture.md §20).

Read inside the close's transaction (``writing.py``), under the customer row lock that every
progressive invoice is issued under too, so a crossing cannot slip in between the read and the
seal. Drafts show the credit as Lago's do; it is recomputed at each rewrite.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.models.exact_json import loads_exact
from tallyflow.models.progressive import FeeKey, progressive_credit
from tallyflow.tasks.invoicing.inputs import _Group

_Key = tuple[int, date]

# The period's last finalized progressive invoice (it carries the period's whole usage so far)
# and what all the period's progressive invoices showed as paid by the hourly deductions.
LAST_PROGRESSIVE = text(
    """
    select k.sid as subscription_id, k.ps as period_start, last.invoice_id,
           last.fees_amount_cents, shown.prepaid
    from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as k(sid, ps)
    cross join lateral (
      select coalesce(sum(p.prepaid_usage_cents), 0) as prepaid
      from progressive_invoices p join invoices v on v.id = p.invoice_id
      where p.subscription_id = k.sid and p.period_start = k.ps and v.status = 'finalized'
    ) shown
    left join lateral (
      select p.invoice_id, v.fees_amount_cents
      from progressive_invoices p join invoices v on v.id = p.invoice_id
      where p.subscription_id = k.sid and p.period_start = k.ps and v.status = 'finalized'
      order by p.sequence desc limit 1
    ) last on true
    """
)

BILLED_FEES = text(
    """
    select invoice_id, external_subscription_id, charge_id, filter_invoice_display_name,
           grouped_by::text as grouped_by, amount_cents
    from invoice_fees
    where invoice_id = any(cast(:ids as bigint[])) and item_type = 'charge'
    """
)


def billed_by_bucket(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, dict[FeeKey, int]]:
    """Each progressive invoice's charge fees by bucket (``models.progressive.fee_key``)."""
    out: dict[int, dict[FeeKey, int]] = defaultdict(dict)
    if not invoice_ids:
        return out
    for r in conn.execute(BILLED_FEES, {"ids": list(invoice_ids)}):
        grouped = loads_exact(r.grouped_by) or {}
        key: FeeKey = (r.external_subscription_id, r.charge_id, r.filter_invoice_display_name,
                       tuple(sorted((str(k), v) for k, v in grouped.items())))
        out[int(r.invoice_id)][key] = out[int(r.invoice_id)].get(key, 0) + int(r.amount_cents)
    return out


def last_progressive(conn: Connection, pairs: Sequence[tuple[int, Any]]) -> list[Any]:
    """(subscription id, period start) -> the rows of ``LAST_PROGRESSIVE``."""
    if not pairs:
        return []
    return list(conn.execute(LAST_PROGRESSIVE, {"subs": [p[0] for p in pairs],
                                                "starts": [p[1] for p in pairs]}))


def credit_progressive(conn: Connection, groups: Sequence[_Group]) -> dict[_Key, Decimal]:
    """Deduct from each invoice what the progressive invoices of its periods billed (its
    ``amounts`` are replaced). Returns, per invoice, the hourly wallet deductions those
    progressive invoices already showed as prepaid, which its own prepaid credits no longer
    count (``prepaid.py``)."""
    pairs = [(s.id, p.period_start) for g in groups for s, p in g.items]
    rows = [r for r in last_progressive(conn, pairs) if r.invoice_id is not None]
    if not rows:
        return {}
    billed = billed_by_bucket(conn, [int(r.invoice_id) for r in rows])
    found = {(int(r.subscription_id), r.period_start): r for r in rows}
    shown: dict[_Key, Decimal] = {}
    for group in groups:
        mine = [found[(s.id, p.period_start)] for s, p in group.items
                if (s.id, p.period_start) in found]
        if not mine:
            continue
        buckets: dict[FeeKey, int] = {}
        for r in mine:
            buckets.update(billed.get(int(r.invoice_id), {}))
        to_credit = sum(int(r.fees_amount_cents) for r in mine)
        group.amounts = progressive_credit(group.amounts, buckets, to_credit)
        shown[group.key] = sum((Decimal(r.prepaid) for r in mine), Decimal(0))
    return shown
