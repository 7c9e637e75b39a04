"""Charges paid in advance: each new event's fee, its invoice and its wallet payment, at once.

Part of the billing cycle (flows/billing.py), after the wallet flow (so this hour's new wallets
and top-ups can pay) and before the period close: for every subscription
whose plan has ``pay_in_advance`` charges, the events of its open periods (the period holding
the hour and those ended less than ``grace_hours`` before it, not on a finalized invoice) with
a timestamp up to the hour and no fee yet are priced (``tallyflow.models.rating.in_advance``)
after the fees already issued, in (timestamp, ingestion order).

Why each event is billed exactly once (docs/architecture.md §3, invariants 2 and 4): one
transaction per subscription holds the customer's row lock and its wallets' locks (the order
the period close and the deductions take them), re-reads what is billed, then writes the fees
(unique per charge, filter bucket and event), the ``pay_in_advance`` invoice of the
``invoiceable`` ones and the wallet postings (keys ``invoice:<invoice id>:<wallet>`` and
``advance:<first fee id>:<wallet>``), or nothing at all. A crash between the fees and the
payment rolls both back; a rerun, a retry or a concurrent run waits on the lock and finds
the events billed. The wallets pay up to their balance (no overflow); what they do not cover
stays due on the invoice (or unpaid on the fee, which is then not regrouped).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NotRequired, TypedDict
from zoneinfo import ZoneInfo

import orjson
from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.invoicing import InvoiceFee
from tallyflow.models.lago import summaries
from tallyflow.models.lago.summaries import ContainedFailure
from tallyflow.models.rating import EventPoint
from tallyflow.models.rating.aggregation import definition_of
from tallyflow.models.rating.in_advance import (
    DEFAULT_BUCKET,
    AdvanceFee,
    BilledEvent,
    advance_fees,
)
from tallyflow.models.rating.periods import BillingPeriod
from tallyflow.models.rating.pricing import ChargeInfo, MetricInfo, SubscriptionInfo
from tallyflow.models.wallets import (
    ZERO,
    Allocation,
    WalletFunds,
    allocate_usage,
    apply_posting,
)
from tallyflow.tasks.folding import load_metrics, load_subscription_rows, loads_exact
from tallyflow.tasks.invoicing.advance.issue import AdvanceLine, charge_taxes, issue_invoice
from tallyflow.tasks.invoicing.inputs import CloseCatalog, CustomerInfo, load_close_catalog
from tallyflow.tasks.runs import containable, failure, transient_retries
from tallyflow.tasks.usage import load_charges
from tallyflow.tasks.wallets import DEFAULT_GRACE_HOURS, LedgerRow, lock_customers, post


@dataclass
class AdvanceSummary:
    """What one run billed in advance."""

    subscriptions: int = 0
    fees: int = 0
    amount_cents: int = 0
    invoices: list[str] = field(default_factory=list)
    paid_cents: Decimal = ZERO
    # Subscriptions whose transaction failed alone, contained to their customer
    # (tasks/runs/containment.py), as plain dicts.
    failed: list[ContainedFailure] = field(default_factory=list)

    def as_dict(self) -> summaries.AdvanceSummary:
        return {"subscriptions": self.subscriptions, "fees": self.fees,
                "amount_cents": self.amount_cents, "invoices": len(self.invoices),
                "invoice_numbers": self.invoices[:50],
                "paid_cents": format(self.paid_cents, "f"), "contained": self.failed}


STEP = "advance-charges"


def bill_advance_charges(
    engine: Engine, at: datetime, *, subscriptions: Sequence[str] | None = None,
    grace_hours: int = DEFAULT_GRACE_HOURS,
) -> AdvanceSummary:
    """Bill the events up to ``at`` of every charge paid in advance that has no fee yet."""
    summary = AdvanceSummary()
    with engine.connect() as conn:
        plans = list(conn.execute(text("select distinct plan_id from charges"
                                       " where pay_in_advance and effective_to is null"))
                     .scalars())
        if not plans:  # the common case: nothing to read
            return summary
        subs = [s for s in load_subscription_rows(conn, subscriptions) if s.plan_id in plans]
        charges = load_charges(conn, plans, load_metrics(conn))
        catalog = load_close_catalog(conn)
    since = at - timedelta(hours=grace_hours)
    for sub in subs:
        mine = [c for c in charges.get(sub.plan_id, []) if c.pay_in_advance]
        periods = sub.periods_between(since, at) if mine and sub.subscription_at <= at else []
        if not periods:
            continue
        try:
            _bill_subscription(engine, sub, mine, periods, at, catalog, summary)
        except Exception as exc:
            # One transaction per subscription already: a failure of its own rolled back
            # only its fees, so it is recorded for its customer and the others go on.
            if not containable(exc):
                raise
            customer = catalog.customers[catalog.customer_of[sub.id]]
            summary.failed.append(failure(STEP, "customer", customer.id, customer.external_id,
                                          customer.external_id, exc,
                                          subscription=sub.external_id))
    return summary


_FINALIZED = text(
    """
    select i.period_start from invoice_subscriptions i join invoices v on v.id = i.invoice_id
    where v.status in ('finalized', 'voided') and i.subscription_id = :s
    """
)
_BILLED = text(
    """
    select charge_slot, bucket, grouped_by::text as grouped_by, event_id, units
    from advance_fees where subscription_id = :s and period_start = :p
    order by charge_slot, id
    """
)
_EVENT_COLUMNS = """
    select e."timestamp", e.id, e.transaction_id, e.properties::text as properties
    from events e
    where e.external_subscription_id = :sub and e.code = :code
      and e.voided_at is null  -- never billed once voided (tasks/corrections/voids.py)
"""
# The period's events up to the hour that this charge (its slot, ``charge_slots``) has not
# billed:
# an anti-join in Postgres, so an hour with nothing new reads no event into Python.
_UNBILLED = """
      and e."timestamp" between :start and :end
      and not exists (select 1 from advance_fees f
                      where f.subscription_id = :sid and f.period_start = :p
                        and f.charge_slot = :slot and f.event_id = e.id)
"""
_NEW_EVENTS = text(_EVENT_COLUMNS + _UNBILLED)
_ANY_NEW = text("select exists (" + _EVENT_COLUMNS + _UNBILLED + ")")
# unique_count only: the billed events themselves (which values they added or removed)
_BILLED_EVENTS = text(_EVENT_COLUMNS + " and e.id = any(cast(:ids as bigint[]))")


_TYPES = {
    "lago_id": "text", "charge_id": "bigint", "charge_position": "integer", "charge_slot": "text",
    "bucket": "integer", "grouped_by": "text", "subscription_id": "bigint",
    "customer_id": "bigint", "period_start": "timestamptz", "period_end": "timestamptz",
    "event_id": "bigint", "transaction_id": "text", "event_timestamp": "timestamptz",
    "billing_hour": "timestamptz", "units": "numeric", "currency": "text",
    "amount_cents": "numeric", "precise_amount_cents": "numeric",
    "taxes_amount_cents": "numeric", "taxes_precise_amount_cents": "numeric",
    "invoiceable": "boolean", "regroup": "boolean",
}
# In billing order (ordinality): the ids keep the order the next fees are priced after.
_INSERT = text(
    f"""
    insert into advance_fees ({", ".join(_TYPES)})
    select {", ".join("cast(grouped_by as jsonb)" if c == "grouped_by" else c for c in _TYPES)}
    from unnest({", ".join(f"cast(:{c} as {t}[])" for c, t in _TYPES.items())})
      with ordinality as r({", ".join(_TYPES)}, n)
    order by n
    returning id, charge_id, bucket, event_id
    """  # noqa: S608 (column names are constants)
)


class _Scope(TypedDict):
    """The parameters of one charge's event queries (SQL names)."""

    sub: str
    code: str
    sid: int
    p: datetime
    slot: str
    start: datetime
    end: datetime


class _FeeRow(TypedDict):
    """One fee paid in advance: the invoice's fee, its event, the ``advance_fees`` row."""

    fee: InvoiceFee
    transaction_id: str
    row: dict[str, Any]  # column -> value, inserted column by column (``_INSERT``)
    id: NotRequired[int]  # the row's, once inserted


@dataclass(frozen=True)
class _Billed:
    bucket: int
    grouped_by: dict[str, Any]
    event_id: int
    units: Decimal


def _bill_subscription(
    engine: Engine, sub: SubscriptionInfo, charges: Sequence[ChargeInfo],
    periods: Sequence[BillingPeriod], at: datetime, catalog: CloseCatalog,
    summary: AdvanceSummary,
) -> None:
    customer = catalog.customers[catalog.customer_of[sub.id]]
    failpoint("advance.bill_subscription", sub)
    with engine.connect() as conn:  # most hours bring nothing new: no lock for those
        slots = charge_slots(charges)
        if not any(conn.execute(_ANY_NEW, _scope(sub, c, p, at, slots)).scalar_one()
                   for p in periods for c in charges):
            return
    with engine.begin() as conn:
        # the period close's lock order: the customer row, then its wallets' rows
        conn.execute(text("select id from customers where id = :c for update"),
                     {"c": customer.id})
        lock_customers(conn, [customer.id])
        finalized = set(conn.execute(_FINALIZED, {"s": sub.id}).scalars())
        rows: list[_FeeRow] = []
        for period in periods:
            if period.period_start not in finalized:
                rows += _period_fees(conn, sub, charges, period, at, catalog, customer)
        if not rows:
            return
        columns = list(rows[0]["row"])
        keyed = {}
        for r in conn.execute(_INSERT, {c: [r["row"][c] for r in rows] for c in columns}):
            keyed[(r.charge_id, r.bucket, r.event_id)] = int(r.id)
        for row in rows:
            fee = row["row"]
            row["id"] = keyed[(fee["charge_id"], fee["bucket"], fee["event_id"])]
        failpoint("advance.fees_written", conn)
        funds = _funds(conn, customer.id, sub.currency, at)
        invoiced = [r for r in rows if r["row"]["invoiceable"] and r["fee"].amount_cents > 0]
        if invoiced:
            _invoice(conn, sub, customer, invoiced, funds, at, summary)
        kept_off = [r for r in rows
                    if not r["row"]["invoiceable"] and r["fee"].amount_cents > 0]
        if kept_off:
            _pay_fees(conn, sub, customer, kept_off, funds, at, summary)
        failpoint("advance.before_commit", conn)
    summary.subscriptions += 1
    summary.fees += len(rows)
    summary.amount_cents += sum(r["fee"].amount_cents for r in rows)


def _period_fees(
    conn: Connection, sub: SubscriptionInfo, charges: Sequence[ChargeInfo],
    period: BillingPeriod, at: datetime, catalog: CloseCatalog, customer: CustomerInfo,
) -> list[_FeeRow]:
    """The new fees of one period (rows to insert, with their invoice fee)."""
    billed: dict[str, list[_Billed]] = defaultdict(list)
    for r in conn.execute(_BILLED, {"s": sub.id, "p": period.period_start}):
        billed[r.charge_slot].append(
            _Billed(int(r.bucket), loads_exact(r.grouped_by) or {}, int(r.event_id),
                    Decimal(r.units)))
    out: list[_FeeRow] = []
    slots = charge_slots(charges)
    for charge in charges:
        metric = charge.metric
        params = _scope(sub, charge, period, at, slots)
        new = _events(conn, _NEW_EVENTS, metric, params)
        if not new:
            continue
        done = billed.get(params["slot"], [])
        points: dict[int, tuple[EventPoint, str]] = {}
        if definition_of(metric.aggregation_type).in_advance_reads_billed_events and done:
            points = _events(conn, _BILLED_EVENTS, metric,
                             {**params, "ids": [b.event_id for b in done]})
        before = [BilledEvent(points[b.event_id][0] if b.event_id in points else None,
                              None if b.bucket == DEFAULT_BUCKET else b.bucket,
                              tuple(b.grouped_by.get(k) for k in charge.pricing_group_keys),
                              b.units)
                  for b in done]
        taxes = charge_taxes(catalog, customer, sub.plan_id, charge.position)
        for fee in advance_fees(charge, sub.currency, before, [p for p, _ in new.values()]):
            out.append(_row(sub, customer, charge, period, at, fee, new[fee.point.seq][1],
                            taxes, params["slot"]))
    return out


def charge_slots(charges: Sequence[ChargeInfo]) -> dict[int, str]:
    """A charge's identity for what it has billed: its metric and its rank among the plan's
    charges on that metric (``"<metric id>:<rank>"``), by position.

    Not the position itself: a plan version that adds or removes a charge on another metric
    shifts positions, and an event billed under the old position must not look unbilled under
    the new one (it would be billed twice). A new price for the same charge keeps its slot, so
    events already billed stay billed at their price, as in Lago.
    """
    slots: dict[int, str] = {}
    seen: dict[int, int] = defaultdict(int)
    for charge in sorted(charges, key=lambda c: c.position):
        slots[charge.position] = f"{charge.metric.id}:{seen[charge.metric.id]}"
        seen[charge.metric.id] += 1
    return slots


def _scope(
    sub: SubscriptionInfo, charge: ChargeInfo, period: BillingPeriod, at: datetime,
    slots: dict[int, str],
) -> _Scope:
    return {"sub": sub.external_id, "code": charge.metric.code, "sid": sub.id,
            "p": period.period_start, "slot": slots[charge.position],
            "start": period.charges_from, "end": min(at, period.charges_to)}


def _events(
    conn: Connection, query: Any, metric: MetricInfo, params: Mapping[str, Any]
) -> dict[int, tuple[EventPoint, str]]:
    """Events by id (the id is the ingestion order), as points, with their transaction id."""
    return {
        int(r.id): (EventPoint.from_event(timestamp=r.timestamp, seq=int(r.id),
                                          properties=loads_exact(r.properties),
                                          field_name=metric.field_name), r.transaction_id)
        for r in conn.execute(query, params)
    }


def _row(
    sub: SubscriptionInfo, customer: CustomerInfo, charge: ChargeInfo, period: BillingPeriod,
    at: datetime, fee: AdvanceFee, transaction_id: str, taxes: Any, slot: str,
) -> _FeeRow:
    grouped_by = dict(zip(charge.pricing_group_keys, fee.group, strict=True))
    invoice_fee = InvoiceFee(
        "charge", sub.external_id, charge.metric.code, charge.metric.name,
        charge.invoice_display_name,
        None if fee.bucket is None else charge.filters[fee.bucket].invoice_display_name,
        grouped_by, fee.fee.units, 1, fee.fee.amount_cents, fee.fee.precise_amount_cents,
        period.from_datetime, period.to_datetime, taxes=taxes, charge_id=charge.id,
    )
    return {"fee": invoice_fee, "transaction_id": transaction_id, "row": {
        "lago_id": str(uuid.uuid4()), "charge_id": charge.id, "charge_position": charge.position,
        "charge_slot": slot,
        "bucket": DEFAULT_BUCKET if fee.bucket is None else fee.bucket,
        "grouped_by": orjson.dumps(grouped_by).decode(), "subscription_id": sub.id,
        "customer_id": customer.id, "period_start": period.period_start,
        "period_end": period.to_datetime, "event_id": fee.point.seq,
        "transaction_id": transaction_id, "event_timestamp": fee.point.timestamp,
        "billing_hour": at, "units": fee.units, "currency": sub.currency,
        "amount_cents": invoice_fee.amount_cents,
        "precise_amount_cents": invoice_fee.precise_amount_cents,
        "taxes_amount_cents": invoice_fee.taxes_amount_cents,
        "taxes_precise_amount_cents": invoice_fee.taxes_precise_amount_cents,
        "invoiceable": charge.invoiceable, "regroup": charge.regroup_paid_fees == "invoice",
    }}


_FUNDS = text(
    """
    select w.id, w.priority, w.created_at, w.rate_amount, w.currency, b.credits_balance,
           b.granted_credits_balance, b.balance_cents
    from wallets w join wallet_balances b on b.wallet_id = w.id
    where w.customer_id = :c and w.status = 'active' and w.currency = :currency
      and (w.expiration_at is null or w.expiration_at > :at)
    order by w.id
    """
)


def _funds(conn: Connection, customer_id: int, currency: str, at: datetime) -> list[WalletFunds]:
    return [WalletFunds(r.id, r.priority, r.created_at, r.rate_amount, r.currency,
                        r.credits_balance, r.granted_credits_balance, r.balance_cents)
            for r in conn.execute(_FUNDS, {"c": customer_id, "currency": currency, "at": at})]


def _pay(
    conn: Connection, funds: list[WalletFunds], owed: Decimal, key: str, customer_id: int,
    sub: SubscriptionInfo, period_start: datetime, note: str, at: datetime,
) -> Decimal:
    """Take up to ``owed`` cents from the wallets (by priority, never below zero); the
    postings' keys start with ``key``. Returns what was taken; ``funds`` follow the postings."""
    available = sum((max(f.capacity_cents, ZERO) for f in funds), ZERO)
    take = min(owed, available)
    allocation = allocate_usage(take, funds) if take > 0 else Allocation()
    rows: list[LedgerRow] = []
    for posting in allocation.postings:
        index = next(i for i, f in enumerate(funds) if f.wallet_id == posting.wallet_id)
        funds[index] = apply_posting(funds[index], posting)
        rows.append(LedgerRow(
            posting.wallet_id, customer_id, posting.direction, "settled", "invoice",
            posting.credits, posting.amount_cents, f"{key}:{posting.wallet_id}",
            granted_credits=posting.granted_credits, subscription_id=sub.id,
            period_start=period_start, note=note,
        ))
    post(conn, rows, at)
    return sum((p.amount_cents for p in allocation.postings), ZERO)


def _spread(conn: Connection, rows: Sequence[_FeeRow], paid: Decimal,
            invoice_id: int | None) -> None:
    """Record on each fee (in billing order) what the wallets paid toward it."""
    left = paid
    shares = []
    for row in rows:
        share = min(left, Decimal(row["fee"].total_amount_cents))
        left -= share
        shares.append(share)
    conn.execute(text("update advance_fees set prepaid_cents = :paid,"
                      " invoice_id = coalesce(:invoice, invoice_id) where id = :id"),
                 [{"paid": s, "invoice": invoice_id, "id": r["id"]}
                  for r, s in zip(rows, shares, strict=True)])


def _invoice(
    conn: Connection, sub: SubscriptionInfo, customer: CustomerInfo,
    rows: Sequence[_FeeRow], funds: list[WalletFunds], at: datetime,
    summary: AdvanceSummary,
) -> None:
    """The pay_in_advance invoice of this hour's invoiceable fees, paid from the wallets."""
    lines = [AdvanceLine(r["fee"], sub.id, r["transaction_id"]) for r in rows]
    day = at.astimezone(ZoneInfo(sub.timezone or "UTC")).date()
    taken: list[Decimal] = []

    def pay(invoice_id: int, owed: int) -> Decimal:
        taken.append(_pay(conn, funds, Decimal(owed), f"invoice:{invoice_id}", customer.id,
                          sub, rows[0]["row"]["period_start"],
                          f"invoice {invoice_id}: paid in advance", at))
        return taken[0]

    invoice_id, number, _ = issue_invoice(conn, customer, "pay_in_advance", day,
                                          sub.currency, lines, at, pay)
    paid = taken[0]
    _spread(conn, rows, paid, invoice_id)
    summary.invoices.append(number)
    summary.paid_cents += paid


def _pay_fees(
    conn: Connection, sub: SubscriptionInfo, customer: CustomerInfo,
    rows: Sequence[_FeeRow], funds: list[WalletFunds], at: datetime,
    summary: AdvanceSummary,
) -> None:
    """Fees kept off invoices (``invoiceable: false``): paid from the wallets at once."""
    owed = sum((Decimal(r["fee"].total_amount_cents) for r in rows), ZERO)
    first = rows[0]["id"]
    paid = _pay(conn, funds, owed, f"advance:{first}", customer.id, sub,
                rows[0]["row"]["period_start"],
                f"{len(rows)} fee(s) paid in advance of {sub.external_id}", at)
    _spread(conn, rows, paid, None)
    summary.paid_cents += paid


@task(name="bill-advance-charges", **transient_retries(retries=3, backoff_factor=1))
def advance_charges_task(at: datetime) -> summaries.AdvanceSummary:
    """Bill the events of charges paid in advance up to ``at`` (each once)."""
    return bill_advance_charges(billing_engine(), at).as_dict()


class EstimateError(ValueError):
    """An estimate refused: ``field`` and Lago's error code for it."""

    def __init__(self, field: str, code: str) -> None:
        super().__init__(f"{field}: {code}")
        self.field, self.code = field, code


_ESTIMATE_SEQ = 2**62  # after every stored event: the estimated one comes last


def estimate_advance_fees(
    engine: Engine, external_subscription_id: str, code: str, properties: dict[str, Any],
    at: datetime,
) -> tuple[str, list[InvoiceFee]]:
    """Lago's ``Fees::EstimatePayInAdvanceService``: the fees one event with ``code`` and
    ``properties`` would get at ``at`` from the subscription's charges paid in advance,
    priced by the billing cycle's own code (``advance_fees``) after what the period has
    billed and the events still waiting to be billed. Nothing is written. Returns the
    subscription's currency and the fees."""
    with engine.connect() as conn:
        rows = load_subscription_rows(conn, [external_subscription_id])
        live = [s for s in rows if s.subscription_at <= at
                and (s.terminated_at is None or s.terminated_at > at)]
        if not live:
            raise EstimateError("subscription", "not_found")
        sub = live[-1]
        advance = [c for c in load_charges(conn, [sub.plan_id], load_metrics(conn)).get(
            sub.plan_id, []) if c.pay_in_advance]
        slots = charge_slots(advance)  # over all of them, as the billing cycle counts
        mine = [c for c in advance if c.metric.code == code]
        if not mine:
            raise EstimateError("code", "does_not_match_an_instant_charge")
        catalog = load_close_catalog(conn)
        customer = catalog.customers[catalog.customer_of[sub.id]]
        [period] = sub.periods_between(at, at)
        out: list[InvoiceFee] = []
        for charge in mine:
            out += _estimate_charge(conn, sub, charge, period, at, catalog, customer,
                                    properties, slots)
    return sub.currency, out


def _estimate_charge(
    conn: Connection, sub: SubscriptionInfo, charge: ChargeInfo, period: BillingPeriod,
    at: datetime, catalog: CloseCatalog, customer: CustomerInfo, properties: dict[str, Any],
    slots: dict[int, str],
) -> list[InvoiceFee]:
    """The estimated event's fees on one charge (``_period_fees`` without the writing)."""
    params = _scope(sub, charge, period, at, slots)
    done = [_Billed(int(r.bucket), loads_exact(r.grouped_by) or {}, int(r.event_id),
                    Decimal(r.units))
            for r in conn.execute(_BILLED, {"s": sub.id, "p": period.period_start})
            if r.charge_slot == params["slot"]]
    points: dict[int, tuple[EventPoint, str]] = {}
    if definition_of(charge.metric.aggregation_type).in_advance_reads_billed_events and done:
        points = _events(conn, _BILLED_EVENTS, charge.metric,
                         {**params, "ids": [b.event_id for b in done]})
    before = [BilledEvent(points[b.event_id][0] if b.event_id in points else None,
                          None if b.bucket == DEFAULT_BUCKET else b.bucket,
                          tuple(b.grouped_by.get(k) for k in charge.pricing_group_keys),
                          b.units)
              for b in done]
    waiting = [p for p, _ in _events(conn, _NEW_EVENTS, charge.metric, params).values()]
    estimated = EventPoint.from_event(timestamp=at, seq=_ESTIMATE_SEQ, properties=properties,
                                      field_name=charge.metric.field_name)
    taxes = charge_taxes(catalog, customer, sub.plan_id, charge.position)
    return [_row(sub, customer, charge, period, at, fee, "", taxes, params["slot"])["fee"]
            for fee in advance_fees(charge, sub.currency, before, [*waiting, estimated])
            if fee.point.seq == _ESTIMATE_SEQ]
