"""Progressive billing: a subscription's lifetime usage crossing a usage threshold issues a
``progressive_billing`` invoice for the period's usage so far, less what the period's earlier
progressive invoices billed (lago-api ``app/services/invoices/progressive_billing_service.rb``,
``app/services/lifetime_usages/``; docs/architecture.md §20). The rules are pure
(``models/progressive.py``); this module reads, decides and writes.

Exactly once. The usage is rated first (``rated_usage``, its own snapshot); then, in ONE
transaction under the customer row lock (the lock of the period close, one-off and credit
invoices) and its wallets' rows: the period's progressive invoices are read, the thresholds
checked against them, and the invoice, its fees, its ``progressive_invoices`` row (unique per
subscription, period and sequence), its number, its document and its ``invoice.created``
webhook commit together. A rerun, a retry after a crash or a second evaluator sees the
invoice already issued (what it billed now counts as billed), so the same crossing never
bills twice; a crash before the commit leaves nothing.

An OPEN period: the invoice is not in ``invoice_subscriptions``, so the period is not closed
(its close still bills it, deducting this invoice), its plan version is not frozen and the
hourly wallet deductions go on. No wallet money moves here: the part of the usage the
hourly deductions already paid is shown as prepaid (``prepaid_usage_cents``), the rest is due;
the period-end invoice evens the wallets out (``prepaid.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.invoicing import InvoiceAmounts, period_fees
from tallyflow.models.lago.results import (
    LagoLifetimeUsage,
    ThresholdCompletion,
    ThresholdRunSummary,
)
from tallyflow.models.lago.times import iso
from tallyflow.models.progressive import (
    LifetimeUsage,
    Threshold,
    applicable_thresholds,
    completion,
    prepaid_shown,
    progressive_invoice,
    thresholds_passed,
)
from tallyflow.models.rating.pricing import SubscriptionInfo, SubscriptionUsage
from tallyflow.tasks.folding import in_force, load_subscription_rows
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.documents import render_sealed
from tallyflow.tasks.invoicing.inputs import CustomerInfo, load_close_catalog, period_input
from tallyflow.tasks.invoicing.one_off import _json, _number
from tallyflow.tasks.invoicing.progressive_credit import billed_by_bucket, last_progressive
from tallyflow.tasks.invoicing.writing import _FEE_COLUMNS, _applied_taxes, _copy, customer_object
from tallyflow.tasks.runs import containable, transient_retries
from tallyflow.tasks.usage import rated_usage
from tallyflow.tasks.wallets import USAGE_DEDUCTED, lock_customers


@dataclass(frozen=True)
class ProgressiveResult:
    """A progressive invoice issued by one evaluation."""

    invoice_id: int
    lago_id: str
    number: str
    external_subscription_id: str
    thresholds: tuple[Threshold, ...]
    total_amount_cents: int


_HISTORICAL = text(
    "select historical_usage_amount_cents from lifetime_usages"
    " where external_subscription_id = :e"
)
# Lago's invoiced usage: the charge fees of the subscription's period invoices, draft or
# finalized (``LifetimeUsages::CalculateService#calculate_invoiced_usage_amount_cents``).
_INVOICED = text(
    """
    select coalesce(sum(f.amount_cents), 0)
    from invoice_fees f join invoices v on v.id = f.invoice_id
    where f.external_subscription_id = :e and f.item_type = 'charge'
      and v.invoice_type = 'subscription' and v.status in ('finalized', 'draft')
    """
)
_DOCUMENTS = text(
    "select s.document as subscription, p.document as plan from subscriptions s"
    " join plans p on p.id = s.plan_id where s.id = :id"
)
# The period has ended and its close wrote it (draft or not): nothing progressive any more.
_CLOSED = text(
    "select 1 from invoice_subscriptions where subscription_id = :s and period_start = :p"
)
_SEQUENCE = text(
    "select coalesce(max(sequence), 0) from progressive_invoices"
    " where subscription_id = :s and period_start = :p"
)


def lifetime_of(conn: Connection, external_id: str, current_cents: int) -> LifetimeUsage:
    """The subscription's lifetime usage with ``current_cents`` as its current usage."""
    historical = conn.execute(_HISTORICAL, {"e": external_id}).scalar()
    invoiced = conn.execute(_INVOICED, {"e": external_id}).scalar_one()
    return LifetimeUsage(int(historical or 0), int(invoiced), current_cents)


def _pending(conn: Connection, sub: SubscriptionInfo, usage: SubscriptionUsage,
             thresholds: tuple[Threshold, ...]) -> tuple[list[Threshold], Any]:
    """The thresholds passed now, and the period's last progressive invoice (or None)."""
    [last] = last_progressive(conn, [(sub.id, usage.period.period_start)])
    billed = 0 if last.invoice_id is None else int(last.fees_amount_cents)
    lifetime = lifetime_of(conn, sub.external_id, usage.amount_cents)
    return thresholds_passed(thresholds, lifetime, billed), last


def bill_thresholds(engine: Engine, external_id: str, at: datetime) -> ProgressiveResult | None:
    """Evaluate one subscription's usage thresholds at ``at``; the progressive invoice issued,
    or None when no threshold was passed (or the subscription is unknown or not in force)."""
    try:
        usage = rated_usage(engine, external_id, at)
    except (LookupError, ValueError):
        return None
    with engine.begin() as conn:
        sub = in_force(load_subscription_rows(conn, [external_id]), at)
        if sub is None or conn.execute(_CLOSED, {"s": sub.id,
                                                 "p": usage.period.period_start}).first():
            return None  # unknown, or its period is on an invoice already (a past hour rerun)
        docs = conn.execute(_DOCUMENTS, {"id": sub.id}).one()
        thresholds = applicable_thresholds(docs.subscription, docs.plan)
        if not thresholds:
            return None
        customer_id = int(conn.execute(text(
            "select customer_id from subscriptions where id = :id"), {"id": sub.id}).scalar_one())
        conn.execute(text("select id from customers where id = :id for update"),
                     {"id": customer_id})
        lock_customers(conn, [customer_id])
        passed, last = _pending(conn, sub, usage, thresholds)
        if not passed:
            return None
        return _issue(conn, sub, customer_id, usage, passed, last, at)


def _issue(conn: Connection, sub: SubscriptionInfo, customer_id: int, usage: SubscriptionUsage,
           passed: list[Threshold], last: Any, at: datetime) -> ProgressiveResult | None:
    catalog = load_close_catalog(conn, [customer_id])
    customer = catalog.customers[customer_id]
    plan = catalog.plans[sub.plan_id]
    entity_codes = customer.entity.tax_codes if customer.entity else ()
    period = period_input(sub, usage.period, plan, usage,
                          subscription_name=catalog.subscription_names.get(sub.id))
    fees = period_fees(period, customer.tax_codes, catalog.taxes, entity_codes)
    billed_before = 0 if last.invoice_id is None else int(last.fees_amount_cents)
    buckets = {} if last.invoice_id is None else \
        billed_by_bucket(conn, [int(last.invoice_id)]).get(int(last.invoice_id), {})
    amounts = progressive_invoice(usage.currency, fees, buckets, billed_before)
    if amounts.sub_total_excluding_taxes_amount_cents <= 0:
        return None  # usage priced at nothing more than was billed: nothing to invoice
    deducted = sum((Decimal(r.amount_cents) for r in conn.execute(USAGE_DEDUCTED, {
        "subs": [sub.id], "starts": [usage.period.period_start]})), Decimal(0))
    shown = prepaid_shown(amounts.sub_total_including_taxes_amount_cents, int(deducted),
                          int(last.prepaid))
    invoice_id, lago_id = _insert(conn, customer, amounts, at)
    _insert_fees(conn, invoice_id, sub, amounts)
    sequence = int(conn.execute(_SEQUENCE, {"s": sub.id, "p": usage.period.period_start})
                   .scalar_one()) + 1
    lifetime = lifetime_of(conn, sub.external_id, usage.amount_cents)
    conn.execute(text(
        """
        insert into progressive_invoices (invoice_id, subscription_id, external_subscription_id,
          period_start, period_end, sequence, lifetime_usage_amount_cents, thresholds,
          prepaid_usage_cents)
        values (:invoice, :sub, :ext, :start, :end, :seq, :lifetime, cast(:thresholds as jsonb),
          :shown)
        """), {"invoice": invoice_id, "sub": sub.id, "ext": sub.external_id,
               "start": usage.period.period_start, "end": usage.period.period_end,
               "seq": sequence, "lifetime": lifetime.total_amount_cents, "shown": shown,
               "thresholds": json.dumps([t.as_lago() for t in passed])})
    failpoint("progressive.before_seal", conn)
    number = _number(conn, customer, invoice_id, amounts.with_prepaid(shown))
    document = render_sealed(conn, [invoice_id])[invoice_id]
    conn.execute(text("update invoices set status = 'finalized', finalized_at = now(),"
                      " html = :html, updated_at = now() where id = :id"),
                 {"html": document, "id": invoice_id})
    announce_invoices(conn, [invoice_id])  # invoice.created, in this transaction (§17)
    settled = amounts.with_prepaid(shown)
    return ProgressiveResult(invoice_id, lago_id, number, sub.external_id, tuple(passed),
                             settled.total_amount_cents)


def _insert(conn: Connection, customer: CustomerInfo, amounts: InvoiceAmounts,
            at: datetime) -> tuple[int, str]:
    day = at.astimezone(ZoneInfo(customer.timezone or "UTC")).date()
    lago_id = str(uuid.uuid4())
    invoice_id = int(conn.execute(text(
        """
        insert into invoices (lago_id, customer_id, invoice_type, issuing_date, currency,
          fees_amount_cents, taxes_amount_cents, total_amount_cents, applied_taxes, customer,
          billing_entity, finalize_after, net_payment_term, payment_due_date,
          progressive_billing_credit_amount_cents)
        values (:lago, :customer, 'progressive_billing', :day, :currency, :fees, :taxes, :total,
          cast(:applied as jsonb), cast(:customer_object as jsonb), cast(:entity as jsonb),
          :at, :term, cast(:day as date) + :term, :credit)
        returning id
        """), {
        "lago": lago_id, "customer": customer.id, "day": day, "currency": amounts.currency,
        "fees": amounts.fees_amount_cents, "taxes": amounts.taxes_amount_cents,
        "total": amounts.total_amount_cents, "applied": _json(_applied_taxes(amounts)),
        "customer_object": _json(customer_object(customer)),
        "entity": _json(dict(customer.entity.document)) if customer.entity else None,
        "at": at, "term": customer.net_payment_term,
        "credit": amounts.progressive_billing_credit_amount_cents,
    }).scalar_one())
    return invoice_id, lago_id


def _insert_fees(conn: Connection, invoice_id: int, sub: SubscriptionInfo,
                 amounts: InvoiceAmounts) -> None:
    rows = [(
        str(uuid.uuid4()), invoice_id, position, sub.id, fee.external_subscription_id,
        fee.item_type, fee.code, fee.name, fee.invoice_display_name,
        fee.filter_invoice_display_name, _json(dict(fee.grouped_by)), fee.charge_id,
        fee.true_up, fee.units, fee.events_count, fee.amount_cents, fee.precise_amount_cents,
        fee.precise_coupons_amount_cents, fee.taxes_rate, fee.taxes_precise_amount_cents,
        fee.taxes_amount_cents, fee.total_amount_cents,
        _json([{"tax_code": t.code, "tax_name": t.name, "tax_rate": format(t.rate, "f")}
               for t in fee.taxes]),
        fee.from_datetime, fee.to_datetime,
    ) for position, fee in enumerate(amounts.fees)]
    if rows:
        _copy(conn, "invoice_fees", _FEE_COLUMNS, rows)


# --------------------------------------------------------------------------------------------
# Every subscription with thresholds; lifetime usage read and set
# --------------------------------------------------------------------------------------------


@dataclass
class ProgressiveRun:
    """What one evaluation of every subscription's thresholds did."""

    subscriptions: int = 0
    issued: list[ProgressiveResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (subscription, error)


# Subscriptions whose own document or plan has thresholds, not terminated (Lago evaluates
# active subscriptions).
_WITH_THRESHOLDS = text(
    """
    select distinct s.external_id
    from subscriptions s join plans p on p.id = s.plan_id
    where s.terminated_at is null and s.status <> 'canceled'
      and (jsonb_array_length(coalesce(s.document -> 'usage_thresholds', '[]'::jsonb)) > 0
           or jsonb_array_length(coalesce(p.document -> 'usage_thresholds', '[]'::jsonb)) > 0)
      and (cast(:only as text[]) is null or s.external_id = any(cast(:only as text[])))
    order by 1
    """
)


def bill_all_thresholds(engine: Engine, at: datetime,
                        only: Sequence[str] | None = None) -> ProgressiveRun:
    """Evaluate the thresholds of every subscription that has some (or of ``only``), each
    contained: one that fails is reported and the others go on (§3, invariant 3)."""
    run = ProgressiveRun()
    with engine.connect() as conn:
        subs = list(conn.execute(_WITH_THRESHOLDS,
                                 {"only": None if only is None else list(only)}).scalars())
    for external_id in subs:
        run.subscriptions += 1
        try:
            issued = bill_thresholds(engine, external_id, at)
        except Exception as exc:
            if not containable(exc):
                raise
            run.failed.append((external_id, f"{type(exc).__name__}: {exc}"))
            continue
        if issued is not None:
            run.issued.append(issued)
    return run


@task(name="bill-usage-thresholds", **transient_retries(retries=2, backoff_factor=1))
def bill_thresholds_task(at: datetime | None = None) -> ThresholdRunSummary:
    """Evaluate every subscription's usage thresholds at ``at`` (now), each contained; the
    progressive invoices issued. Run every minute by ``deliver-webhooks`` and every hour by
    ``close-periods`` (docs/architecture.md §20). A rerun issues nothing new."""
    run = bill_all_thresholds(billing_engine(), at or datetime.now(UTC))
    return {"subscriptions": run.subscriptions,
            "issued": [{"invoice": r.number, "subscription": r.external_subscription_id,
                        "thresholds": [t.amount_cents for t in r.thresholds],
                        "total_amount_cents": r.total_amount_cents} for r in run.issued],
            "failed": [{"subscription": s, "error": e} for s, e in run.failed]}


def report_thresholds(summary: ThresholdRunSummary) -> None:
    """Print what one evaluation did (the flows' log)."""
    print(f"usage thresholds: {summary['subscriptions']} subscription(s) evaluated,"
          f" {len(summary['issued'])} progressive invoice(s) issued,"
          f" {len(summary['failed'])} failed")
    for issued in summary["issued"]:
        print(f"usage thresholds: {issued['subscription']}: invoice {issued['invoice']}"
              f" for thresholds {issued['thresholds']}")
    for failed in summary["failed"]:
        print(f"usage thresholds: {failed['subscription']}: {failed['error']}")


_ROW = text(
    "select s.id, s.subscription_at, s.document as subscription, p.document as plan"
    " from subscriptions s join plans p on p.id = s.plan_id where s.external_id = :e"
    " and s.status <> 'canceled' order by (s.terminated_at is null) desc, s.id desc limit 1"
)
_REACHED = text(
    "select min(p.created_at) from progressive_invoices p join invoices v on v.id = p.invoice_id"
    " where p.external_subscription_id = :e and v.status = 'finalized'"
    " and p.lifetime_usage_amount_cents >= :amount"
)


def lifetime_usage(engine: Engine, external_id: str, at: datetime) -> LagoLifetimeUsage:
    """Lago's ``lifetime_usage`` object (``V1::LifetimeUsageSerializer`` with its
    ``usage_thresholds``) at ``at``; ``LookupError`` for an unknown subscription."""
    try:
        current = rated_usage(engine, external_id, at).amount_cents
    except ValueError:
        current = 0  # not in force at ``at``: no current period
    except LookupError:
        current = 0
    with engine.connect() as conn:
        row = conn.execute(_ROW, {"e": external_id}).first()
        if row is None:
            raise LookupError(f"unknown subscription {external_id!r}")
        lifetime = lifetime_of(conn, external_id, current)
        thresholds = applicable_thresholds(row.subscription, row.plan)
        steps: list[ThresholdCompletion] = []
        for step in completion(thresholds, lifetime.total_amount_cents):
            reached = None
            if step["reached"]:
                reached = conn.execute(_REACHED, {"e": external_id,
                                                  "amount": step["amount_cents"]}).scalar()
                reached = reached or at
            steps.append({"amount_cents": step["amount_cents"],
                          "completion_ratio": step["completion_ratio"],
                          "reached_at": iso(reached)})
    out: LagoLifetimeUsage = {
        "lago_id": external_id,
        "lago_subscription_id": str(row.id),
        "external_subscription_id": external_id,
        "external_historical_usage_amount_cents": lifetime.historical_usage_amount_cents,
        "invoiced_usage_amount_cents": lifetime.invoiced_usage_amount_cents,
        "current_usage_amount_cents": lifetime.current_usage_amount_cents,
        "from_datetime": iso(row.subscription_at),
        "to_datetime": iso(at),
    }
    if thresholds:
        out["usage_thresholds"] = steps
    return out


def set_historical_usage(engine: Engine, external_id: str, cents: int,
                         at: datetime) -> LagoLifetimeUsage:
    """Lago's ``PUT .../lifetime_usage`` (``external_historical_usage_amount_cents``): the
    usage before Tallyflow, counted in the lifetime total; ``ValueError`` when negative."""
    if cents < 0:
        raise ValueError("external_historical_usage_amount_cents must not be negative")
    with engine.begin() as conn:
        if conn.execute(_ROW, {"e": external_id}).first() is None:
            raise LookupError(f"unknown subscription {external_id!r}")
        conn.execute(text(
            """
            insert into lifetime_usages (external_subscription_id, historical_usage_amount_cents)
            values (:e, :c)
            on conflict (external_subscription_id) do update
              set historical_usage_amount_cents = excluded.historical_usage_amount_cents,
                  updated_at = now()
            """), {"e": external_id, "c": cents})
    return lifetime_usage(engine, external_id, at)
