"""Coupons at finalization: read the customers' applied coupons, credit them, move them on.

Lago applies coupons only to an invoice being finalized (``Invoices::CalculateFeesService``
``should_create_coupon_credit?``), so a draft shows none. Here the step runs inside the
finalizing transaction, under the customer row locks the close takes (tasks/invoicing/
writing.py): the applied coupons are read there, the amounts of the invoice are recomputed
by the pure step (``models/coupons.py``: fees -> coupons -> taxes), and the credits and the
applied coupons' new state are written in the same transaction as the seal. A crash before
the commit leaves neither; the next run reads the coupons as they were and applies them
again, once (``coupon_credits`` is unique per invoice and applied coupon).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Connection, text

from tallyflow.models.coupons import AppliedCoupon, CouponCredit, apply_coupons
from tallyflow.tasks.invoicing.inputs import _Group

_Key = tuple[int, date]

_ACTIVE = text(
    """
    select a.id, a.customer_id, k.code, k.coupon_type, a.frequency, a.amount_cents,
           a.amount_currency, a.percentage_rate, a.frequency_duration_remaining,
           k.plan_codes, k.billable_metric_codes,
           coalesce((select sum(c.amount_cents) from coupon_credits c
                     where c.applied_coupon_id = a.id), 0) as credited
    from applied_coupons a join coupons k on k.id = a.coupon_id
    where a.customer_id = any(cast(:customers as bigint[])) and a.status = 'active'
    order by a.customer_id, a.created_at, a.id
    """
)

_PLANS = text(
    "select s.external_id, p.code from subscriptions s join plans p on p.id = s.plan_id"
    " where s.id = any(cast(:ids as bigint[]))"
)


def _applied(conn: Connection, customer_ids: Sequence[int]) -> dict[int, list[AppliedCoupon]]:
    out: dict[int, list[AppliedCoupon]] = defaultdict(list)
    for r in conn.execute(_ACTIVE, {"customers": list(customer_ids)}):
        out[r.customer_id].append(AppliedCoupon(
            r.id, r.code, r.coupon_type, r.frequency,
            amount_cents=None if r.amount_cents is None else int(r.amount_cents),
            amount_currency=r.amount_currency,
            percentage_rate=None if r.percentage_rate is None else Decimal(r.percentage_rate),
            frequency_duration_remaining=r.frequency_duration_remaining,
            credited_cents=int(r.credited), plan_codes=frozenset(r.plan_codes),
            metric_codes=frozenset(r.billable_metric_codes)))
    return out


def credit_coupons(conn: Connection, due: Sequence[_Group]) -> dict[_Key, tuple[CouponCredit, ...]]:
    """Apply the customers' coupons to the invoices being finalized (their ``amounts`` are
    replaced), oldest billing day first, each invoice seeing what the earlier ones left."""
    if not due:
        return {}
    coupons = _applied(conn, sorted({g.customer.id for g in due}))
    if not coupons:
        return {}
    ids = sorted({i for g in due for i in g.subscriptions.values()})
    plan_of = {r.external_id: r.code for r in conn.execute(_PLANS, {"ids": ids})}
    credits: dict[_Key, tuple[CouponCredit, ...]] = {}
    for group in sorted(due, key=lambda g: g.key):
        mine = coupons.get(group.customer.id)
        if not mine:
            continue
        result = apply_coupons(group.amounts, mine, plan_of)
        group.amounts = result.amounts
        coupons[group.customer.id] = list(result.coupons)
        if result.credits:
            credits[group.key] = result.credits
    return credits


def write_credits(
    conn: Connection, credits: Mapping[_Key, tuple[CouponCredit, ...]],
    ids: Mapping[_Key, int], currency: Mapping[_Key, str], at: datetime,
) -> None:
    """The credits of the invoices (before their seal) and the applied coupons' new state."""
    rows = [(ids[key], credit, currency[key]) for key, made in sorted(credits.items())
            for credit in made]
    if not rows:
        return
    conn.execute(text(
        """
        insert into coupon_credits (lago_id, invoice_id, applied_coupon_id, amount_cents,
          precise_amount_cents, amount_currency)
        select * from unnest(cast(:lago as text[]), cast(:invoices as bigint[]),
          cast(:coupons as bigint[]), cast(:amounts as numeric[]), cast(:precise as numeric[]),
          cast(:currency as text[]))
        """), {
        "lago": [str(uuid.uuid4()) for _ in rows], "invoices": [i for i, _, _ in rows],
        "coupons": [c.applied_coupon_id for _, c, _ in rows],
        "amounts": [c.amount_cents for _, c, _ in rows],
        "precise": [c.precise_amount_cents for _, c, _ in rows],
        "currency": [cur for _, _, cur in rows],
    })
    # in invoice order, so a coupon credited on two invoices ends in its last state
    conn.execute(text(
        """
        update applied_coupons a set frequency_duration_remaining = r.remaining,
          status = case when r.ends then 'terminated' else a.status end,
          terminated_at = case when r.ends then :at else a.terminated_at end, updated_at = now()
        from (select distinct on (id) id, remaining, ends
              from unnest(cast(:ids as bigint[]), cast(:remaining as integer[]),
                          cast(:ends as boolean[]), cast(:seq as integer[]))
                as u(id, remaining, ends, seq)
              order by id, seq desc) r
        where a.id = r.id
        """), {
        "ids": [c.applied_coupon_id for _, c, _ in rows],
        "remaining": [c.frequency_duration_remaining for _, c, _ in rows],
        "ends": [c.terminated for _, c, _ in rows], "seq": list(range(len(rows))), "at": at,
    })
