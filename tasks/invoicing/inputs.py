"""What the close reads: issuers, customers and plans, and each period's input.

The input goes to the pure invoice builder (``tallyflow.models.invoicing``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, TypeVar, cast
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Connection, text

from tallyflow.models.catalog import BillingEntity, Customer, LagoModel, Plan
from tallyflow.models.invoicing import (
    ChargeUsage,
    InvoiceAmounts,
    PeriodInput,
    Tax,
    UsageLine,
    trial_end,
)
from tallyflow.models.lago import summaries
from tallyflow.models.lago.summaries import ContainedFailure
from tallyflow.models.rating.filters import filter_display_name
from tallyflow.models.rating.periods import ONE_MICROSECOND, BillingPeriod, charges_interval
from tallyflow.models.rating.pricing import ChargeUsage as RatedCharge
from tallyflow.models.rating.pricing import FilterUsage, SubscriptionInfo, SubscriptionUsage
from tallyflow.models.rating.pricing import UsageLine as RatedLine
from tallyflow.models.wallets import (
    ZERO,
)
from tallyflow.tasks.folding import loads_exact
from tallyflow.tasks.invoicing.watermark import LISTED_IN_SUMMARY

M = TypeVar("M", bound=LagoModel)


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
    # The current plan version (tasks/catalog/plan_versions.py): what a period closed now prices
    # with.
    version_id: int | None = None
    version: int | None = None
    pay_in_advance: bool = False
    # the plan's own interval, and whether its charges are billed monthly while its fee is
    # billed once per period (Lago's bill_charges_monthly; models/rating/periods.py)
    interval: str = ""
    bill_charges_monthly: bool = False


@dataclass
class CloseCatalog:
    taxes: dict[str, Tax]
    customers: dict[int, CustomerInfo]
    plans: dict[int, PlanInfo]
    customer_of: dict[int, int]
    # a subscription's ``name``, its subscription fee's display name (Lago's
    # ``Subscription#invoice_name``); only the rows that have one
    subscription_names: dict[int, str] = field(default_factory=dict)


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


def load_close_catalog(
    conn: Connection, customer_ids: Collection[int] | None = None
) -> CloseCatalog:
    """Taxes, customers and plans with the invoice fields of their stored documents.

    ``customer_ids`` narrows the customers read (their documents are the costly part: the
    hourly close of 100,000 subscriptions needs only the customers whose periods ended);
    None reads them all."""
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
    query = ("select id, external_id, name, email, currency, timezone,"
             " document::text as document from customers")
    params: dict[str, Any] = {}
    if customer_ids is not None:
        query += " where id = any(cast(:ids as bigint[]))"
        params["ids"] = sorted(set(customer_ids))
    for r in conn.execute(text(query), params):
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
                               " p.interval,"
                               " p.pay_in_advance, p.document::text as document,"
                               " v.id as version_id, v.version"
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
            version_id=r.version_id, version=r.version, pay_in_advance=bool(r.pay_in_advance),
            interval=r.interval,
            bill_charges_monthly=(
                charges_interval(r.interval, plan.bill_charges_monthly) != r.interval),
        )
    customer_of: dict[int, int] = {}
    names: dict[int, str] = {}
    for r in conn.execute(text("select id, customer_id, name from subscriptions")):
        customer_of[int(r.id)] = int(r.customer_id)
        if r.name:
            names[int(r.id)] = r.name
    return CloseCatalog(taxes, customers, plans, customer_of, names)


def _lines(usage: RatedCharge) -> tuple[UsageLine, ...]:
    """A charge's finest buckets: per group (and filter within it), else per filter, else the
    charge itself."""
    def line(priced: RatedLine, name: str | None,
             grouped_by: Mapping[str, str | None] | None) -> UsageLine:
        return UsageLine(priced.units, priced.events_count, priced.amount_cents,
                         priced.precise_amount_cents, name, dict(grouped_by or {}))

    def name(bucket: FilterUsage) -> str | None:
        """A filter's fee name (Lago's ``ChargeFilter#display_name``: its values when it has
        no display name); the default bucket has none."""
        if bucket.values is None:
            return bucket.invoice_display_name
        return filter_display_name(bucket.invoice_display_name, bucket.values,
                                   usage.charge.metric.filters)

    if usage.grouped_usage:
        out: list[UsageLine] = []
        for group in usage.grouped_usage:
            if group.filters:
                out += [line(f.line, name(f), group.grouped_by) for f in group.filters]
            else:
                out.append(line(group.line, None, group.grouped_by))
        return tuple(out)
    if usage.filters:
        return tuple(line(f.line, name(f), None) for f in usage.filters)
    return (line(usage.line, None, None),)


def period_input(
    sub: SubscriptionInfo, period: BillingPeriod, plan: PlanInfo,
    usage: SubscriptionUsage | None, upgraded: bool = False,
    subscription_name: str | None = None,
) -> PeriodInput:
    """``upgraded``: the row was ended by an upgrade; the change's day is billed on the new
    plan, so the old one's fee stops the day before (models/lifecycle.py). ``usage`` None:
    the period's advance fee only (no charges are billed at a period's start).
    ``subscription_name``: the subscription's ``name``, its fee's display name."""
    zone = ZoneInfo(period.timezone)
    to_date = period.to_datetime.astimezone(zone).date()
    if upgraded and period.to_datetime < period.period_end:
        to_date = (period.to_datetime + ONE_MICROSECOND).astimezone(zone).date() - timedelta(
            days=1)
    ends = trial_end(sub.subscription_at, plan.trial_period)
    # charges billed monthly: a month's close bills no fee; the plan's period's fee is billed
    # on its own (split_fee_input in arrears, the advance periods in advance: ``usage`` None)
    fee = ZERO if plan.bill_charges_monthly and usage is not None else plan.amount_cents
    charges = []
    for index, item in enumerate(usage.charges if usage is not None else ()):
        if item.charge.pay_in_advance:
            # billed per event when rated (tasks/invoicing/advance/charges.py); non-recurring
            # (catalog
            # rule), so the period end bills nothing of it again (Lago)
            continue
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
        subscription_name=subscription_name,
        amount_cents=fee,
        trial_end=ends,
        trial_end_date=ends.astimezone(zone).date() if ends else None,
        minimum_commitment_cents=plan.minimum_commitment_cents,
        commitment_invoice_display_name=plan.commitment_invoice_display_name,
        plan_tax_codes=plan.tax_codes,
        start_date=period.start_date,
        end_date=period.end_date,
        from_date=period.from_datetime.astimezone(zone).date(),
        to_date=to_date,
        from_datetime=period.from_datetime,
        to_datetime=period.to_datetime,
        charges=tuple(charges),
        pay_in_advance=plan.pay_in_advance,
        period_end=period.period_end,
    )


@dataclass
class CloseSummary:
    """What one close did (for the run summary and the artifact)."""

    drafts: int = 0
    finalized: list[summaries.InvoiceOutcome] = field(default_factory=list)
    unchanged_final: int = 0
    prepaid_cents: Decimal = ZERO
    watermark: str | None = None
    late_events: int = 0
    advance_charges: int = 0
    # Customers whose close failed alone or was withheld (tasks/runs/containment.py).
    failed: list[ContainedFailure] = field(default_factory=list)

    def as_dict(self) -> summaries.CloseSummary:
        return {
            "drafts": self.drafts,
            "finalized": len(self.finalized),
            # the first ones (a run finalizing thousands lists them with `invoices list`)
            "finalized_invoices": self.finalized[:LISTED_IN_SUMMARY],
            "prepaid_credit_amount_cents": int(self.prepaid_cents),
            "watermark": self.watermark,
            "late_events": self.late_events,
            "advance_charges_invoices": self.advance_charges,
            "contained": self.failed,
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
    advance: list[tuple[SubscriptionInfo, BillingPeriod]] = field(default_factory=list)
    """Periods paid in advance starting on this billing day (their fee only)."""

    @property
    def subscriptions(self) -> dict[str, int]:
        """External id -> row id of every subscription with a fee on the invoice."""
        return {s.external_id: s.id for s, _ in [*self.items, *self.advance]}

    @property
    def key(self) -> tuple[int, date]:
        return (self.customer.id, self.issuing_date)


BATCH: Final = 500


def split_fee_input(
    sub: SubscriptionInfo, period: BillingPeriod, plan: PlanInfo, upgraded: bool = False,
    subscription_name: str | None = None,
) -> PeriodInput | None:
    """A plan billing its charges monthly (Lago's ``bill_charges_monthly``): the subscription
    fee of its yearly (or semiannual) period, on the invoice of the month that ends it (or of
    the termination), as Lago's ``should_create_yearly_subscription_fee?`` in arrears; None for
    the other months and for every other plan. The fee's dates are the plan's whole period,
    prorated like any fee for a first or terminated period. Paid in advance, the fee is billed
    at the period's start instead (the close's advance periods, over ``fee_view``)."""
    if not plan.bill_charges_monthly or plan.pay_in_advance:
        return None
    whole = fee_view(sub, plan).period_at(period.to_datetime)
    if whole.to_datetime != period.to_datetime:
        return None
    return period_input(sub, whole, plan, None, upgraded, subscription_name)


def fee_view(sub: SubscriptionInfo, plan: PlanInfo) -> SubscriptionInfo:
    """The subscription with the periods its fee is billed in: the plan's own interval when
    its charges are billed monthly (their periods are the subscription's), else itself."""
    return replace(sub, interval=plan.interval) if plan.bill_charges_monthly else sub
