"""Period close I/O: draft invoices for ended periods, refreshed until they may be finalized.

Why it is safe to run every hour, rerun, retry and crash (design.md, invariants 2-5):
- One transaction per customer and billing day: the invoice, its fees, its periods, the
  finalization deduction and the number are written together or not at all.
- A draft is keyed by (customer, issuing day, type) and rewritten wholesale from the rated
  usage each time, so a rerun or a price change converges instead of adding.
- Finalization happens once: the customer row is locked, a finalized invoice is skipped, and
  triggers (migration 0006) reject any later change to it, its fees or its periods.
- The wallet ledger stops at finalization: the hourly deductions leave finalized periods alone
  (``tasks.wallets``), and the last deduction is posted under the key
  ``invoice:<invoice id>:<wallet id>``, so it can exist only once.

When an invoice may be finalized: the ingest watermark (every object listed by a finished
ingest run is loaded, capped by the oldest object still waiting) has passed the period end plus
a settle delay (``TALLYFLOW_INVOICE_SETTLE_HOURS``, default 2), and the customer's
``invoice_grace_period`` days have passed since the period end.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar, cast
from zoneinfo import ZoneInfo

import orjson
from prefect import task
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, text

from models.catalog import BillingEntity, Customer, LagoModel, Plan
from models.invoicing import (
    ChargeUsage,
    InvoiceAmounts,
    PeriodInput,
    Tax,
    UsageLine,
    invoice_amounts,
    trial_end,
)
from models.rating.periods import ONE_MICROSECOND, BillingPeriod
from models.rating.pricing import ChargeUsage as RatedCharge
from models.rating.pricing import SubscriptionUsage
from models.rating.pricing import UsageLine as RatedLine
from models.wallets import (
    ZERO,
    Allocation,
    Deducted,
    WalletFunds,
    allocate_correction,
    allocate_usage,
    apply_posting,
)
from tallyflow.failpoints import failpoint
from tallyflow.resources import billing_engine
from tasks.invoice_documents import render_documents
from tasks.rating import SubscriptionInfo, load_subscriptions, loads_exact
from tasks.retry import transient_retries
from tasks.usage import _event_values_reader, rate_subscription, read_inputs
from tasks.wallets import USAGE_DEDUCTED, LedgerRow, lock_customers, post

M = TypeVar("M", bound=LagoModel)

SETTLE_ENV: Final = "TALLYFLOW_INVOICE_SETTLE_HOURS"
PREFIX_ENV: Final = "TALLYFLOW_INVOICE_PREFIX"
DEFAULT_SETTLE_HOURS: Final = 2
DEFAULT_PREFIX: Final = "TF"
LISTED_IN_SUMMARY: Final = 50


def settle_hours() -> int:
    return int(os.environ.get(SETTLE_ENV, str(DEFAULT_SETTLE_HOURS)))


def invoice_prefix() -> str:
    return os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)


# --------------------------------------------------------------------------------------------
# Ingest watermark
# --------------------------------------------------------------------------------------------

_WATERMARK = text(
    """
    select (select max(started_at) from ingest_runs where finished_at is not null) as listed,
           (select min(discovered_at) from ingest_objects where status <> 'ingested')
             as waiting
    """
)


def ingest_watermark(conn: Connection) -> datetime | None:
    """Up to when every event is known to be loaded: the start (listing time) of the last
    finished ingest run, but no later than the oldest object still not loaded. None when
    nothing was ever ingested: then no invoice is finalized (nothing says usage is complete)."""
    row = conn.execute(_WATERMARK).one()
    if row.listed is None:
        return None
    return row.listed if row.waiting is None else min(row.listed, row.waiting)


# --------------------------------------------------------------------------------------------
# What the close needs from the catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityInfo:
    """The issuer (Lago's billing entity) as invoices show it."""

    code: str
    prefix: str | None
    tax_codes: tuple[str, ...]
    grace_days: int | None
    net_payment_term: int | None
    document: Mapping[str, Any]


@dataclass(frozen=True)
class CustomerInfo:
    id: int
    external_id: str
    name: str | None
    email: str | None
    currency: str | None
    timezone: str | None
    tax_codes: tuple[str, ...]
    grace_days: int
    net_payment_term: int
    document: Mapping[str, Any]
    entity: EntityInfo | None = None


@dataclass(frozen=True)
class PlanInfo:
    id: int
    code: str
    name: str
    invoice_display_name: str | None
    amount_cents: Decimal
    trial_period: Decimal | None
    tax_codes: tuple[str, ...]
    minimum_commitment_cents: Decimal | None
    commitment_invoice_display_name: str | None
    charge_tax_codes: tuple[tuple[str, ...], ...]
    charge_minimums: tuple[Decimal, ...]
    # The current plan version (tasks/plan_versions.py): what a period closed now prices with.
    version_id: int | None = None
    version: int | None = None


@dataclass
class CloseCatalog:
    taxes: dict[str, Tax]
    customers: dict[int, CustomerInfo]
    plans: dict[int, PlanInfo]
    customer_of: dict[int, int]


def _stored(model: type[M], document: Mapping[str, Any]) -> M:
    """A stored document as its model. Apply validated it; one that no longer parses (written
    by hand or by an older version) bills without invoice options rather than stopping every
    customer's close."""
    try:
        return model.model_validate(document)
    except ValidationError:
        return cast(M, model.model_construct())


def _first(*values: int | None) -> int:
    return next((v for v in values if v is not None), 0)


def load_close_catalog(conn: Connection) -> CloseCatalog:
    """Taxes, customers and plans with the invoice fields of their stored documents."""
    taxes = {
        r.code: Tax(r.code, r.name, Decimal(r.rate), bool(r.applied_to_organization))
        for r in conn.execute(text("select code, name, rate, applied_to_organization from taxes"))
    }
    customers: dict[int, CustomerInfo] = {}
    entities: dict[str, EntityInfo] = {}
    default: EntityInfo | None = None
    for r in conn.execute(text("select document::text as document from billing_entities"
                               " order by code")):
        doc = loads_exact(r.document) or {}
        entity = _stored(BillingEntity, doc)
        info = EntityInfo(entity.code, entity.document_number_prefix, tuple(entity.tax_codes),
                          entity.invoice_grace_period, entity.net_payment_term, doc)
        entities[entity.code] = info
        default = info if entity.is_default else default
    for r in conn.execute(text("select id, external_id, name, email, currency, timezone,"
                               " document::text as document from customers")):
        doc = loads_exact(r.document) or {}
        customer = _stored(Customer, doc)
        issuer = entities.get(customer.billing_entity_code or "", default)
        # Lago: the customer's setting, else its billing entity's, else none.
        grace = _first(customer.invoice_grace_period, issuer.grace_days if issuer else None)
        term = _first(customer.net_payment_term,
                      issuer.net_payment_term if issuer else None)
        customers[r.id] = CustomerInfo(
            r.id, r.external_id, r.name, r.email, r.currency, r.timezone,
            tuple(customer.tax_codes), grace, term, doc, issuer,
        )
    plans: dict[int, PlanInfo] = {}
    minimums: dict[int, list[Decimal]] = defaultdict(list)
    for r in conn.execute(text("select plan_id, min_amount_cents from charges"
                               " where effective_to is null order by plan_id, position")):
        minimums[r.plan_id].append(Decimal(r.min_amount_cents))
    for r in conn.execute(text("select p.id, p.code, p.name, p.amount_cents, p.trial_period,"
                               " p.document::text as document, v.id as version_id, v.version"
                               " from plans p left join plan_versions v on v.plan_id = p.id"
                               " and v.effective_to is null")):
        plan = _stored(Plan, loads_exact(r.document) or {})
        commitment = plan.minimum_commitment
        plans[r.id] = PlanInfo(
            id=r.id, code=r.code, name=r.name,
            invoice_display_name=plan.invoice_display_name,
            amount_cents=Decimal(r.amount_cents),
            trial_period=None if r.trial_period is None else Decimal(r.trial_period),
            tax_codes=tuple(plan.tax_codes),
            minimum_commitment_cents=(Decimal(commitment.amount_cents)
                                      if commitment and commitment.amount_cents else None),
            commitment_invoice_display_name=commitment.invoice_display_name if commitment else None,
            charge_tax_codes=tuple(tuple(c.tax_codes) for c in plan.charges),
            charge_minimums=tuple(minimums.get(r.id, [])),
            version_id=r.version_id, version=r.version,
        )
    customer_of = {
        int(r.id): int(r.customer_id)
        for r in conn.execute(text("select id, customer_id from subscriptions"))
    }
    return CloseCatalog(taxes, customers, plans, customer_of)


# --------------------------------------------------------------------------------------------
# Which periods have ended
# --------------------------------------------------------------------------------------------

_CLOSED = text(
    """
    select i.subscription_id, max(i.period_end) as period_end
    from invoice_subscriptions i join invoices v on v.id = i.invoice_id
    where v.status = 'finalized'
    group by i.subscription_id
    """
)


def ended_periods(
    subs: Sequence[SubscriptionInfo], closed_until: Mapping[int, datetime], at: datetime
) -> list[tuple[SubscriptionInfo, BillingPeriod]]:
    """Periods that ended before ``at`` and are not on a finalized invoice yet, oldest first."""
    out: list[tuple[SubscriptionInfo, BillingPeriod]] = []
    for sub in subs:
        moment = sub.subscription_at
        if sub.id in closed_until:
            moment = max(moment, closed_until[sub.id] + ONE_MICROSECOND)
        last = at if sub.terminated_at is None else min(at, sub.terminated_at)
        while moment <= last:
            period = sub.period_at(moment)
            if period.period_end >= at:
                break
            out.append((sub, period))
            moment = period.period_end + ONE_MICROSECOND
    return out


# --------------------------------------------------------------------------------------------
# Building one invoice
# --------------------------------------------------------------------------------------------


def _lines(usage: RatedCharge) -> tuple[UsageLine, ...]:
    """A charge's finest buckets: per group (and filter within it), else per filter, else the
    charge itself."""
    def line(priced: RatedLine, name: str | None,
             grouped_by: Mapping[str, str | None] | None) -> UsageLine:
        return UsageLine(priced.units, priced.events_count, priced.amount_cents,
                         priced.precise_amount_cents, name, dict(grouped_by or {}))

    if usage.grouped_usage:
        out: list[UsageLine] = []
        for group in usage.grouped_usage:
            if group.filters:
                out += [line(f.line, f.invoice_display_name, group.grouped_by)
                        for f in group.filters]
            else:
                out.append(line(group.line, None, group.grouped_by))
        return tuple(out)
    if usage.filters:
        return tuple(line(f.line, f.invoice_display_name, None) for f in usage.filters)
    return (line(usage.line, None, None),)


def period_input(
    sub: SubscriptionInfo, period: BillingPeriod, plan: PlanInfo, usage: SubscriptionUsage,
) -> PeriodInput:
    zone = ZoneInfo(period.timezone)
    ends = trial_end(sub.subscription_at, plan.trial_period)
    charges = []
    for index, item in enumerate(usage.charges):
        charges.append(ChargeUsage(
            charge_id=item.charge.id,
            metric_code=item.charge.metric.code,
            metric_name=item.charge.metric.name,
            invoice_display_name=item.display_name,
            min_amount_cents=(plan.charge_minimums[index]
                              if index < len(plan.charge_minimums) else ZERO),
            tax_codes=(plan.charge_tax_codes[index]
                       if index < len(plan.charge_tax_codes) else ()),
            lines=_lines(item),
        ))
    return PeriodInput(
        external_subscription_id=sub.external_id,
        plan_code=plan.code,
        plan_name=plan.name,
        plan_invoice_display_name=plan.invoice_display_name,
        amount_cents=plan.amount_cents,
        trial_end=ends,
        trial_end_date=ends.astimezone(zone).date() if ends else None,
        minimum_commitment_cents=plan.minimum_commitment_cents,
        commitment_invoice_display_name=plan.commitment_invoice_display_name,
        plan_tax_codes=plan.tax_codes,
        start_date=period.start_date,
        end_date=period.end_date,
        from_date=period.from_datetime.astimezone(zone).date(),
        to_date=period.to_datetime.astimezone(zone).date(),
        from_datetime=period.from_datetime,
        to_datetime=period.to_datetime,
        charges=tuple(charges),
    )


@dataclass
class CloseSummary:
    """What one close did (for the run summary and the artifact)."""

    drafts: int = 0
    finalized: list[dict[str, Any]] = field(default_factory=list)
    unchanged_final: int = 0
    prepaid_cents: Decimal = ZERO
    watermark: str | None = None
    late_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "drafts": self.drafts,
            "finalized": len(self.finalized),
            # the first ones (a run finalizing thousands lists them with `invoices list`)
            "finalized_invoices": self.finalized[:LISTED_IN_SUMMARY],
            "prepaid_credit_amount_cents": int(self.prepaid_cents),
            "watermark": self.watermark,
            "late_events": self.late_events,
        }


@dataclass
class _Group:
    """One invoice to write: a customer's periods that end on one billing day."""

    customer: CustomerInfo
    issuing_date: date
    items: list[tuple[SubscriptionInfo, BillingPeriod]]
    amounts: InvoiceAmounts
    finalize_after: datetime
    due: bool
    # subscription id -> the plan version id its period is priced with
    plan_versions: dict[int, int | None] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, date]:
        return (self.customer.id, self.issuing_date)


BATCH: Final = 500


def close_periods(
    engine: Engine,
    at: datetime,
    *,
    customers: Sequence[str] | None = None,
    settle: timedelta | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH,
) -> CloseSummary:
    """Close every subscription period that ended before ``at``: draft or refresh its invoice,
    finalize it when its time has come. ``customers`` limits the close to these external ids;
    ``now`` is the moment the finalization deductions are posted at (default ``at``)."""
    settle = timedelta(hours=settle_hours()) if settle is None else settle
    summary = CloseSummary()
    with engine.connect() as conn:
        subs = list(load_subscriptions(conn).values())
        closed_until = {int(r.subscription_id): r.period_end for r in conn.execute(_CLOSED)}
        catalog = load_close_catalog(conn)
        watermark = ingest_watermark(conn)
    summary.watermark = watermark.isoformat() if watermark else None
    if customers is not None:
        wanted = set(customers)
        subs = [s for s in subs
                if catalog.customers[catalog.customer_of[s.id]].external_id in wanted]
    grouped: dict[tuple[int, date], list[tuple[SubscriptionInfo, BillingPeriod]]] = (
        defaultdict(list))
    by_end: dict[datetime, list[SubscriptionInfo]] = defaultdict(list)
    for sub, period in ended_periods(subs, closed_until, at):
        grouped[(catalog.customer_of[sub.id], period.end_date)].append((sub, period))
        by_end[period.period_end].append(sub)
    # Rate together the periods that end at the same instant (one consistent read each).
    usage: dict[tuple[int, datetime], SubscriptionUsage] = {}
    for end, ending in sorted(by_end.items()):
        usage.update(_rate(engine, ending, end))
    groups: list[_Group] = []
    for (customer_id, end_date), items in sorted(grouped.items()):
        customer = catalog.customers[customer_id]
        periods = [period_input(sub, period, catalog.plans[sub.plan_id],
                                usage[(sub.id, period.period_start)])
                   for sub, period in items]
        amounts = invoice_amounts(items[0][0].currency, periods, customer.tax_codes,
                                  catalog.taxes,
                                  customer.entity.tax_codes if customer.entity else ())
        period_end = max(p.period_end for _, p in items)
        finalize_after = period_end + ONE_MICROSECOND + timedelta(days=customer.grace_days)
        due = (at >= finalize_after and watermark is not None
               and watermark >= period_end + settle)
        groups.append(_Group(customer, end_date + timedelta(days=1), items, amounts,
                             finalize_after, due,
                             {s.id: catalog.plans[s.plan_id].version_id for s, _ in items}))
    for first in range(0, len(groups), max(1, batch_size)):
        for outcome in _write_batch(engine, groups[first:first + batch_size],
                                    now or at):
            if outcome is None:
                summary.unchanged_final += 1
            elif outcome["status"] == "finalized":
                summary.finalized.append(outcome)
                summary.prepaid_cents += Decimal(outcome["prepaid_credit_amount_cents"])
            else:
                summary.drafts += 1
    with engine.connect() as conn:
        summary.late_events = late_usage_count(conn)
    return summary


def _rate(
    engine: Engine, subs: Sequence[SubscriptionInfo], end: datetime
) -> dict[tuple[int, datetime], SubscriptionUsage]:
    out: dict[tuple[int, datetime], SubscriptionUsage] = {}
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            inputs = read_inputs(conn, subs, end)
            for sub in subs:
                period = inputs.periods[sub.id]
                out[(sub.id, period.period_start)] = rate_subscription(
                    sub, inputs.charges_of(sub), period,
                    inputs.states.get(sub.id, {}), _event_values_reader(conn, sub, period),
                )
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _customer_object(customer: CustomerInfo) -> dict[str, Any]:
    return {
        "lago_id": str(customer.id),
        "external_id": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "timezone": customer.timezone,
        "tax_codes": list(customer.tax_codes),
        "invoice_grace_period": customer.grace_days,
        "net_payment_term": customer.net_payment_term,
    }


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _applied_taxes(amounts: InvoiceAmounts) -> list[dict[str, Any]]:
    return [{"tax_code": a.code, "tax_name": a.name, "tax_rate": format(a.rate, "f"),
             "fees_amount_cents": a.fees_amount_cents, "amount_cents": a.amount_cents,
             "amount_currency": amounts.currency} for a in amounts.applied_taxes]


_EXISTING = text(
    """
    select v.id, v.customer_id, v.issuing_date, v.status
    from invoices v
    join unnest(cast(:customers as bigint[]), cast(:days as date[])) as k(cid, day)
      on v.customer_id = k.cid and v.issuing_date = k.day
    where v.invoice_type = 'subscription'
    """
)

_UPSERT = text(
    """
    insert into invoices as v (lago_id, customer_id, issuing_date, currency, fees_amount_cents,
      taxes_amount_cents, total_amount_cents, applied_taxes, customer, finalize_after,
      net_payment_term, payment_due_date, billing_entity)
    select lago, cid, day, currency, fees, taxes, total, cast(applied as jsonb),
           cast(customer as jsonb), after, term, day + term, cast(entity as jsonb)
    from unnest(cast(:lago as text[]), cast(:customers as bigint[]), cast(:days as date[]),
                cast(:currency as text[]), cast(:fees as numeric[]), cast(:taxes as numeric[]),
                cast(:total as numeric[]), cast(:applied as text[]), cast(:customer as text[]),
                cast(:after as timestamptz[]), cast(:term as integer[]),
                cast(:entity as text[]))
      as r(lago, cid, day, currency, fees, taxes, total, applied, customer, after, term,
           entity)
    order by cid, day
    on conflict (customer_id, issuing_date, invoice_type) where invoice_type <> 'credit'
    do update set
      currency = excluded.currency, fees_amount_cents = excluded.fees_amount_cents,
      taxes_amount_cents = excluded.taxes_amount_cents,
      total_amount_cents = excluded.total_amount_cents,
      prepaid_credit_amount_cents = 0, applied_taxes = excluded.applied_taxes,
      customer = excluded.customer, finalize_after = excluded.finalize_after,
      net_payment_term = excluded.net_payment_term,
      payment_due_date = excluded.payment_due_date,
      billing_entity = excluded.billing_entity, updated_at = now()
    returning v.id, v.customer_id, v.issuing_date
    """
)

_SETTLE = text(
    """
    update invoices v set prepaid_credit_amount_cents = r.prepaid,
      total_amount_cents = r.total, sequential_id = r.seq, number = r.number, updated_at = now()
    from unnest(cast(:ids as bigint[]), cast(:prepaid as numeric[]), cast(:total as numeric[]),
                cast(:seq as integer[]), cast(:number as text[])) as r(id, prepaid, total, seq,
                                                                       number)
    where v.id = r.id
    """
)

_SEAL = text(
    """
    update invoices v set status = 'finalized', finalized_at = now(), html = r.html,
      updated_at = now()
    from unnest(cast(:ids as bigint[]), cast(:html as text[])) as r(id, html)
    where v.id = r.id
    """
)


def _write_batch(
    engine: Engine, groups: Sequence[_Group], at: datetime
) -> list[dict[str, Any] | None]:
    """Upsert the drafts of a batch of invoices and finalize the due ones: one transaction.
    None for an invoice already finalized (nothing may change)."""
    if not groups:
        return []
    customer_ids = sorted({g.customer.id for g in groups})
    with engine.begin() as conn:
        # The customer rows serialise closes; the wallet rows are the lock the hourly
        # deductions take, so no deduction for these periods moves in between.
        conn.execute(text("select id from customers where id = any(cast(:ids as bigint[]))"
                          " order by id for update"), {"ids": customer_ids})
        lock_customers(conn, customer_ids)
        keys = {"customers": [g.customer.id for g in groups],
                "days": [g.issuing_date for g in groups]}
        existing = {(r.customer_id, r.issuing_date): r for r in conn.execute(_EXISTING, keys)}
        live = [g for g in groups
                if g.key not in existing or existing[g.key].status != "finalized"]
        drafts = [existing[g.key].id for g in live if g.key in existing]
        if drafts:
            conn.execute(text("delete from invoice_fees"
                              " where invoice_id = any(cast(:ids as bigint[]))"), {"ids": drafts})
            conn.execute(text("delete from invoice_subscriptions"
                              " where invoice_id = any(cast(:ids as bigint[]))"), {"ids": drafts})
        ids: dict[tuple[int, date], int] = {}
        if live:
            rows = conn.execute(_UPSERT, {
                "lago": [str(uuid.uuid4()) for _ in live],
                "customers": [g.customer.id for g in live],
                "days": [g.issuing_date for g in live],
                "currency": [g.amounts.currency for g in live],
                "fees": [g.amounts.fees_amount_cents for g in live],
                "taxes": [g.amounts.taxes_amount_cents for g in live],
                "total": [g.amounts.total_amount_cents for g in live],
                "applied": [_json(_applied_taxes(g.amounts)) for g in live],
                "customer": [_json(_customer_object(g.customer)) for g in live],
                "after": [g.finalize_after for g in live],
                "term": [g.customer.net_payment_term for g in live],
                "entity": [_json(dict(g.customer.entity.document)) if g.customer.entity
                           else None for g in live],
            })
            ids = {(r.customer_id, r.issuing_date): r.id for r in rows}
            _insert_parts(conn, [(ids[g.key], g) for g in live])
        failpoint("invoices.after_draft")
        prepaid = _prepaid(conn, live, ids, at)
        failpoint("invoices.after_deduction")
        numbers = _numbers(conn, [g for g in live if g.due])
        settled = {g.key: g.amounts.with_prepaid(int(prepaid[g.key])) for g in live}
        if live:
            conn.execute(_SETTLE, {
                "ids": [ids[g.key] for g in live],
                "prepaid": [settled[g.key].prepaid_credit_amount_cents for g in live],
                "total": [settled[g.key].total_amount_cents for g in live],
                "seq": [numbers[g.key][0] if g.key in numbers else None for g in live],
                "number": [numbers[g.key][1] if g.key in numbers else None for g in live],
            })
        due = [ids[g.key] for g in live if g.due]
        failpoint("invoices.before_seal")
        if due:
            # Documents from the numbered drafts; then the invoices are sealed and the
            # triggers refuse any later change.
            documents = render_documents(conn, due)
            conn.execute(_SEAL, {"ids": due, "html": [documents[i] for i in due]})
    failpoint("invoices.after_commit")
    written = {g.key for g in live}
    return [None if g.key not in written else {
        "invoice_id": ids[g.key], "number": numbers[g.key][1] if g.key in numbers else None,
        "customer": g.customer.external_id, "status": "finalized" if g.due else "draft",
        "issuing_date": g.issuing_date.isoformat(), "currency": g.amounts.currency,
        "total_amount_cents": settled[g.key].total_amount_cents,
        "prepaid_credit_amount_cents": settled[g.key].prepaid_credit_amount_cents,
    } for g in groups]


def _insert_parts(conn: Connection, batch: Sequence[tuple[int, _Group]]) -> None:
    periods = [(invoice_id, s, p) for invoice_id, g in batch for s, p in g.items]
    versions = {s.id: g.plan_versions.get(s.id) for _, g in batch for s, _ in g.items}
    conn.execute(text(
        """
        insert into invoice_subscriptions (subscription_id, period_start, invoice_id, period_end,
          from_datetime, to_datetime, plan_version_id)
        select * from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[]),
          cast(:invoices as bigint[]), cast(:ends as timestamptz[]),
          cast(:froms as timestamptz[]), cast(:tos as timestamptz[]),
          cast(:versions as bigint[]))
        """), {
        "versions": [versions[s.id] for _, s, _ in periods],
        "subs": [s.id for _, s, _ in periods], "starts": [p.period_start for _, _, p in periods],
        "invoices": [i for i, _, _ in periods], "ends": [p.period_end for _, _, p in periods],
        "froms": [p.from_datetime for _, _, p in periods],
        "tos": [p.to_datetime for _, _, p in periods],
    })
    rows: dict[str, list[Any]] = defaultdict(list)
    for invoice_id, group in batch:
        sub_ids = {s.external_id: s.id for s, _ in group.items}
        for position, fee in enumerate(group.amounts.fees):
            for name, value in (
                ("lago_id", str(uuid.uuid4())), ("invoice_id", invoice_id),
                ("position", position), ("subscription_id", sub_ids[fee.external_subscription_id]),
                ("external_subscription_id", fee.external_subscription_id),
                ("item_type", fee.item_type), ("code", fee.code), ("name", fee.name),
                ("invoice_display_name", fee.invoice_display_name),
                ("filter_invoice_display_name", fee.filter_invoice_display_name),
                ("grouped_by", _json(dict(fee.grouped_by))), ("charge_id", fee.charge_id),
                ("true_up", fee.true_up), ("units", fee.units),
                ("events_count", fee.events_count), ("amount_cents", fee.amount_cents),
                ("precise_amount_cents", fee.precise_amount_cents),
                ("taxes_rate", fee.taxes_rate),
                ("taxes_precise_amount_cents", fee.taxes_precise_amount_cents),
                ("taxes_amount_cents", fee.taxes_amount_cents),
                ("total_amount_cents", fee.total_amount_cents),
                ("applied_taxes", _json([{"tax_code": t.code, "tax_name": t.name,
                                          "tax_rate": format(t.rate, "f")} for t in fee.taxes])),
                ("from_datetime", fee.from_datetime), ("to_datetime", fee.to_datetime),
            ):
                rows[name].append(value)
    if not rows:
        return
    conn.execute(text(
        """
        insert into invoice_fees (lago_id, invoice_id, position, subscription_id,
          external_subscription_id, item_type, code, name, invoice_display_name,
          filter_invoice_display_name, grouped_by, charge_id, true_up, units, events_count,
          amount_cents, precise_amount_cents, taxes_rate, taxes_precise_amount_cents,
          taxes_amount_cents, total_amount_cents, applied_taxes, from_datetime, to_datetime)
        select lago_id, invoice_id, position, subscription_id, external_subscription_id,
          item_type, code, name, invoice_display_name, filter_invoice_display_name,
          cast(grouped_by as jsonb), charge_id, true_up, units, events_count, amount_cents,
          precise_amount_cents, taxes_rate, taxes_precise_amount_cents, taxes_amount_cents,
          total_amount_cents, cast(applied_taxes as jsonb), from_datetime, to_datetime
        from unnest(cast(:lago_id as text[]), cast(:invoice_id as bigint[]),
          cast(:position as integer[]), cast(:subscription_id as bigint[]),
          cast(:external_subscription_id as text[]), cast(:item_type as text[]),
          cast(:code as text[]), cast(:name as text[]), cast(:invoice_display_name as text[]),
          cast(:filter_invoice_display_name as text[]), cast(:grouped_by as text[]),
          cast(:charge_id as bigint[]), cast(:true_up as boolean[]), cast(:units as numeric[]),
          cast(:events_count as bigint[]), cast(:amount_cents as numeric[]),
          cast(:precise_amount_cents as numeric[]), cast(:taxes_rate as numeric[]),
          cast(:taxes_precise_amount_cents as numeric[]),
          cast(:taxes_amount_cents as numeric[]), cast(:total_amount_cents as numeric[]),
          cast(:applied_taxes as text[]), cast(:from_datetime as timestamptz[]),
          cast(:to_datetime as timestamptz[]))
          as r(lago_id, invoice_id, position, subscription_id, external_subscription_id,
               item_type, code, name, invoice_display_name, filter_invoice_display_name,
               grouped_by, charge_id, true_up, units, events_count, amount_cents,
               precise_amount_cents, taxes_rate, taxes_precise_amount_cents,
               taxes_amount_cents, total_amount_cents, applied_taxes, from_datetime,
               to_datetime)
        """), dict(rows))


# --------------------------------------------------------------------------------------------
# Prepaid credits
# --------------------------------------------------------------------------------------------


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
    at: datetime,
) -> dict[tuple[int, date], Decimal]:
    """What the wallets paid toward each invoice: the hourly usage deductions already posted
    for its periods, plus, for the invoices being finalized, the last deduction of the rest
    (subscription fee, true-ups, taxes, usage not deducted yet) as far as the balances go, by
    the usual priority; or, when the hourly deductions took more than the invoice owes, the
    excess back. The postings of the whole batch go out in one statement."""
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
    prepaid: dict[tuple[int, date], Decimal] = {}
    ledger: list[LedgerRow] = []
    for group in groups:
        rows = [r for s, p in group.items for r in taken.get((s.id, p.period_start), [])]
        deducted = sum((Decimal(r.amount_cents) for r in rows), ZERO)
        prepaid[group.key] = deducted
        if not group.due:
            continue
        delta = Decimal(group.amounts.sub_total_including_taxes_amount_cents) - deducted
        usable = [funds[w] for w in wallets_of.get(group.customer.id, [])
                  if funds[w].currency == group.amounts.currency]
        if delta > 0:
            available = sum((max(f.capacity_cents, ZERO) for f in usable), ZERO)
            take = min(delta, available)
            allocation = allocate_usage(take, usable) if take > 0 else Allocation()
        elif delta < 0:
            net: dict[int, list[Decimal]] = {}
            for r in rows:
                cents, credits, granted = net.get(r.wallet_id, [ZERO, ZERO, ZERO])
                net[r.wallet_id] = [cents + r.amount_cents, credits + r.credits,
                                    granted + r.granted_credits]
            allocation = allocate_correction(-delta, [
                Deducted(funds[w], *values) for w, values in sorted(net.items()) if w in funds])
        else:
            continue
        invoice_id = ids[group.key]
        for posting in allocation.postings:
            funds[posting.wallet_id] = apply_posting(funds[posting.wallet_id], posting)
            outbound = posting.direction == "outbound"
            prepaid[group.key] += posting.amount_cents if outbound else -posting.amount_cents
            ledger.append(LedgerRow(
                posting.wallet_id, group.customer.id, posting.direction, "settled", "invoice",
                posting.credits, posting.amount_cents, f"invoice:{invoice_id}:{posting.wallet_id}",
                granted_credits=posting.granted_credits,
                note=f"invoice {invoice_id}: {'paid' if outbound else 'refunded'}"
                     f" {posting.amount_cents} cents at finalization",
            ))
    post(conn, ledger, at)
    return prepaid


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


# --------------------------------------------------------------------------------------------
# Late usage
# --------------------------------------------------------------------------------------------

_LATE = """
    from invoice_subscriptions i
    join invoices v on v.id = i.invoice_id and v.status = 'finalized'
    join subscriptions s on s.id = i.subscription_id
    join events e on e.external_subscription_id = s.external_id
      and e."timestamp" between i.from_datetime and i.to_datetime
      and e.ingested_at > v.finalized_at
"""


def late_usage_count(conn: Connection) -> int:
    """Events that arrived after the invoice of their period was finalized (not billed)."""
    return int(conn.execute(text("select count(*)" + _LATE)).scalar_one())


def late_usage(engine: Engine, limit: int = 100) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            """select v.number, s.external_id as external_subscription_id, e.transaction_id,
                      e.code, e."timestamp", e.ingested_at, v.finalized_at"""
            + _LATE + """ order by e.ingested_at, e.id limit :limit"""), {"limit": limit})
        return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------------------------
# Prefect task
# --------------------------------------------------------------------------------------------


@task(name="close-periods", **transient_retries(retries=3, backoff_factor=1))
def close_periods_task(at: datetime) -> dict[str, Any]:
    """Close the periods ended by ``at`` (drafts refreshed, due invoices finalized)."""
    return close_periods(billing_engine(), at).as_dict()


# --------------------------------------------------------------------------------------------
# Events for automations
# --------------------------------------------------------------------------------------------

MAX_INVOICE_EVENTS: Final = 100


@dataclass
class PendingInvoiceEvents:
    events: list[dict[str, Any]]
    more: int
    more_total_cents: dict[str, int]
    ids: list[int]


def pending_invoice_events(engine: Engine, limit: int = MAX_INVOICE_EVENTS) -> PendingInvoiceEvents:
    """Finalized invoices not announced yet: one event each up to ``limit``, the rest counted
    for one summary event (as wallet alerts are)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """
            select v.id, v.lago_id, v.number, v.currency, v.total_amount_cents,
                   v.prepaid_credit_amount_cents, v.issuing_date, c.external_id
            from invoices v join customers c on c.id = v.customer_id
            where v.status = 'finalized' and v.emitted_at is null
            order by v.id
            """)).all()
    events = [{
        "event": "tallyflow.invoice.finalized",
        "resource": {"prefect.resource.id": f"tallyflow.invoice.{r.lago_id}",
                     "prefect.resource.name": r.number,
                     "tallyflow.customer": r.external_id},
        "payload": {"number": r.number, "issuing_date": r.issuing_date.isoformat(),
                    "currency": r.currency, "total_amount_cents": int(r.total_amount_cents),
                    "prepaid_credit_amount_cents": int(r.prepaid_credit_amount_cents)},
    } for r in rows[:limit]]
    totals: dict[str, int] = defaultdict(int)
    for r in rows[limit:]:
        totals[r.currency] += int(r.total_amount_cents)
    return PendingInvoiceEvents(events, max(0, len(rows) - limit), dict(totals),
                                [r.id for r in rows])


def mark_invoice_events_emitted(engine: Engine, ids: Sequence[int]) -> None:
    with engine.begin() as conn:
        conn.execute(text("update invoices set emitted_at = now()"
                          " where id = any(cast(:ids as bigint[])) and emitted_at is null"),
                     {"ids": list(ids)})
