"""Period close I/O: draft invoices for ended periods, refreshed until they may be finalized.

Why it is safe to run every hour, rerun, retry and crash (docs/architecture.md §3, invariants 2-5):
- One transaction per customer and billing day: the invoice, its fees, its periods, the
  finalization deduction and the number are written together or not at all.
- A draft is keyed by (customer, issuing day, type) and rewritten wholesale from the rated
  usage each time, so a rerun or a price change converges instead of adding.
- Finalization happens once: the customer row is locked, a finalized invoice is skipped, and
  triggers (migration 0006) reject any later change to it, its fees or its periods.
- The wallet ledger stops at finalization: the hourly deductions leave finalized periods alone
  (``tallyflow.tasks.wallets``), and the last deduction is posted under the key
  ``invoice:<invoice id>:<wallet id>``, so it can exist only once.

Plans paid in advance (``plan.pay_in_advance``): a period's subscription fee goes on the invoice
of the billing day the period starts (its first period: the day the subscription starts), with
the previous period's charges in arrears when there is one; see :func:`advance_periods`.

When an invoice may be finalized (``models.invoicing.finalization``): the ingest watermark
(every object listed by a finished ingest run is loaded, capped by the oldest object still
waiting) has passed the period end plus a settle delay (``TALLYFLOW_INVOICE_SETTLE_HOURS``,
default 2), and the customer's ``invoice_grace_period`` days have passed since the period end.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from prefect import task
from sqlalchemy import Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.invoicing import (
    PeriodInput,
    advance_issued_at,
    finalization,
    invoice_amounts,
)
from tallyflow.models.lago import summaries
from tallyflow.models.rating.periods import ONE_MICROSECOND, BillingPeriod
from tallyflow.models.rating.pricing import SubscriptionInfo, SubscriptionUsage
from tallyflow.tasks.folding import load_subscription_rows
from tallyflow.tasks.invoicing.advance.issue import regroup_paid_fees
from tallyflow.tasks.invoicing.inputs import (
    BATCH,
    CloseCatalog,
    CloseSummary,
    _Group,
    fee_view,
    load_close_catalog,
    period_input,
    split_fee_input,
)
from tallyflow.tasks.invoicing.late import late_usage_count
from tallyflow.tasks.invoicing.watermark import ingest_watermark, settle_hours
from tallyflow.tasks.invoicing.writing import _write_batch
from tallyflow.tasks.runs import contain, failure, transient_retries
from tallyflow.tasks.usage import event_values_reader, rate_subscription, read_inputs

STEP = "close-periods"
WITHHELD = ("not closed: an earlier step of this hour failed for this customer, so its"
            " numbers may be stale")

_CLOSED = text(
    """
    select i.subscription_id, max(i.period_end) as period_end
    from invoice_subscriptions i join invoices v on v.id = i.invoice_id
    where v.status in ('finalized', 'voided')  -- voided: closed still (docs/architecture.md §13)
    group by i.subscription_id
    """
)


def ended_periods(
    subs: Sequence[SubscriptionInfo], closed_until: Mapping[int, datetime], at: datetime,
    skip_termination: Collection[int] = frozenset(),
) -> list[tuple[SubscriptionInfo, BillingPeriod]]:
    """Periods that ended before ``at`` and are not on a finalized invoice yet, oldest first.

    A terminated subscription's last period ends at its termination, so it is invoiced as soon
    as that moment has passed (Lago's termination invoice), not at the nominal period end;
    with ``on_termination_invoice: skip`` (``skip_termination``) it is not invoiced at all.
    """
    out: list[tuple[SubscriptionInfo, BillingPeriod]] = []
    for sub in subs:
        moment = sub.subscription_at
        if sub.id in closed_until:
            moment = max(moment, closed_until[sub.id] + ONE_MICROSECOND)
        last = at if sub.terminated_at is None else min(at, sub.terminated_at)
        while moment <= last:
            period = sub.period_at(moment)
            if period.to_datetime >= at:
                break
            if sub.id in skip_termination and cut_short(period):
                break
            out.append((sub, period))
            moment = period.period_end + ONE_MICROSECOND
    return out


def advance_periods(
    subs: Sequence[SubscriptionInfo], in_advance: Collection[int],
    closed_until: Mapping[int, datetime], at: datetime,
) -> list[tuple[SubscriptionInfo, BillingPeriod]]:
    """Periods of the subscriptions paid in advance (``in_advance``) that have started by
    ``at``, from the first one after the last finalized period on, oldest first.

    The fee of the period after the last finalized one sits on that finalized invoice (same
    billing day) or is still to be billed; the caller drops those whose billing day is
    finalized already. A period that starts after the termination is never billed.
    """
    out: list[tuple[SubscriptionInfo, BillingPeriod]] = []
    for sub in subs:
        if sub.id not in in_advance:
            continue
        moment = sub.subscription_at
        if sub.id in closed_until:
            moment = max(moment, closed_until[sub.id] + ONE_MICROSECOND)
        last = at if sub.terminated_at is None else min(at, sub.terminated_at)
        while moment <= last:
            period = sub.period_at(moment)
            out.append((sub, period))
            moment = period.period_end + ONE_MICROSECOND
    return out


_FINALIZED_DAYS = text(
    """
    select v.customer_id, v.issuing_date from invoices v
    join unnest(cast(:customers as bigint[]), cast(:days as date[])) as k(cid, day)
      on v.customer_id = k.cid and v.issuing_date = k.day
    where v.invoice_type = 'subscription' and v.status in ('finalized', 'voided')
    """
)


def cut_short(period: BillingPeriod) -> bool:
    """A period a termination ended before its nominal end (the termination invoice's)."""
    return period.to_datetime < period.period_end


def issuing_date(period: BillingPeriod) -> date:
    """The billing day: the day after the period, or the termination's own local day."""
    if cut_short(period):
        return period.to_datetime.astimezone(ZoneInfo(period.timezone)).date()
    return period.end_date + timedelta(days=1)


_Key = tuple[int, date]  # (customer id, billing day)
_Periods = list[tuple[SubscriptionInfo, BillingPeriod]]


@dataclass
class _Schedule:
    """What the close has to do this run, before any rating: the ended periods by customer
    and billing day (and by end, for rating), the periods paid in advance by the day they
    are issued, and the catalog and watermark the invoices are built with."""

    catalog: CloseCatalog
    watermark: datetime | None
    upgraded: set[int]
    # rows a plan change touched, and when it was recorded (migration 0025)
    changed_at: dict[int, datetime] = field(default_factory=dict)
    grouped: dict[_Key, _Periods] = field(default_factory=lambda: defaultdict(list))
    by_end: dict[datetime, list[SubscriptionInfo]] = field(
        default_factory=lambda: defaultdict(list)
    )
    advance: dict[_Key, _Periods] = field(default_factory=lambda: defaultdict(list))
    issued_at: dict[_Key, datetime] = field(default_factory=dict)


def close_periods(
    engine: Engine,
    at: datetime,
    *,
    customers: Sequence[str] | None = None,
    settle: timedelta | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH,
    skip_customers: Collection[str] = (),
    on_demand: tuple[str, date] | None = None,
) -> CloseSummary:
    """Close every subscription period that ended before ``at``: draft or refresh its invoice,
    finalize it when its time has come. ``customers`` limits the close to these external ids;
    ``now`` is the moment the finalization deductions are posted at (default ``at``).

    A failure is contained to its customer (tasks/runs/containment.py): a subscription whose
    rating fails, or an invoice whose transaction fails on its own, leaves that customer's
    invoices of this run unwritten and is reported in ``summary.failed``; every other
    customer's close commits. ``skip_customers`` (external ids: an earlier step of the hour
    failed for them) are not closed on possibly stale numbers, and are listed as withheld.
    ``on_demand`` (customer external id, issuing day): the invoice Lago's finalize call asks
    for, its customer's grace period skipped (the watermark and settle delay still apply).
    """
    settle = timedelta(hours=settle_hours()) if settle is None else settle
    summary = CloseSummary()
    plan = _schedule(engine, at, customers)
    catalog = plan.catalog
    summary.watermark = plan.watermark.isoformat() if plan.watermark else None
    if plan.advance:
        _drop_finalized_days(engine, plan.advance)
    held = {k[0] for k in [*plan.grouped, *plan.advance]
            if catalog.customers[k[0]].external_id in skip_customers}
    summary.failed += [failure(STEP, "customer", c, catalog.customers[c].external_id,
                               catalog.customers[c].external_id, WITHHELD, withheld=True)
                       for c in sorted(held)]
    usage, failed = _rate_ending(engine, plan, held)
    groups = _invoice_groups(plan, usage, held | set(failed), at, settle, on_demand)
    for first in range(0, len(groups), max(1, batch_size)):
        written, lost = contain(groups[first:first + batch_size],
                                functools.partial(_write_batch, engine, at=now or at))
        for group, exc in lost:
            failed.setdefault(group.customer.id, (None, exc))
        for outcome in (o for part in written for o in part):
            if outcome is None:
                summary.unchanged_final += 1
            elif outcome["status"] == "finalized":
                summary.finalized.append(outcome)
                summary.prepaid_cents += Decimal(outcome["prepaid_credit_amount_cents"])
            else:
                summary.drafts += 1
    summary.failed += [
        failure(STEP, "customer", c, catalog.customers[c].external_id,
                catalog.customers[c].external_id, exc, subscription=sub)
        for c, (sub, exc) in sorted(failed.items())
    ]
    # paid fees of charges kept off invoices, regrouped once their period has ended
    summary.advance_charges = len(regroup_paid_fees(engine, at, customers))
    with engine.connect() as conn:
        summary.late_events = late_usage_count(conn)
    return summary


def _schedule(engine: Engine, at: datetime, customers: Sequence[str] | None) -> _Schedule:
    """Read the subscriptions, what is finalized and the catalog, and find the periods to
    close (one connection; customers' documents only for those with work: they are what
    costs at 100,000 subscriptions with nothing ending this hour)."""
    with engine.connect() as conn:
        subs = load_subscription_rows(conn)
        closed_until = {int(r.subscription_id): r.period_end for r in conn.execute(_CLOSED)}
        skipped = list(conn.execute(text("select id from subscriptions"
                                         " where on_termination_invoice = 'skip'")).scalars())
        # rows a plan change ended (a downgrade's ends with its period: never cut short)
        upgraded = {int(i) for i in conn.execute(text(
            "select previous_subscription_id from subscriptions"
            " where previous_subscription_id is not null")).scalars()}
        # taxes, plans and who owns what; customers below, only those with work
        catalog = load_close_catalog(conn, customer_ids=())
        plan = _Schedule(catalog, ingest_watermark(conn), upgraded, {
            int(r.id): r.plan_changed_at for r in conn.execute(text(
                "select id, plan_changed_at from subscriptions"
                " where plan_changed_at is not null"))})
        if customers is not None:
            wanted = {int(i) for i in conn.execute(text(
                "select id from customers where external_id = any(cast(:ids as text[]))"),
                {"ids": list(customers)}).scalars()}
            subs = [s for s in subs if catalog.customer_of[s.id] in wanted]
        for sub, period in ended_periods(subs, closed_until, at, {int(i) for i in skipped}):
            plan.grouped[(catalog.customer_of[sub.id], issuing_date(period))].append(
                (sub, period))
            plan.by_end[period.to_datetime].append(sub)
        # Fees paid in advance: on the invoice of the day they are issued (the period's start,
        # or the end of a trial inside it), unless that invoice is finalized already.
        in_advance = {s.id for s in subs if catalog.plans[s.plan_id].pay_in_advance}
        # charges billed monthly: the fee in advance once per plan period (fee_view)
        views = [fee_view(s, catalog.plans[s.plan_id]) for s in subs]
        for sub, period in advance_periods(views, in_advance, closed_until, at):
            issued = advance_issued_at(
                period_input(sub, period, catalog.plans[sub.plan_id], None,
                             subscription_name=catalog.subscription_names.get(sub.id)))
            if issued is None or issued > at:
                continue
            key = (catalog.customer_of[sub.id],
                   issued.astimezone(ZoneInfo(period.timezone)).date())
            plan.advance[key].append((sub, period))
            plan.issued_at[key] = max(plan.issued_at.get(key, issued), issued)
        needed = {customer_id for customer_id, _ in [*plan.grouped, *plan.advance]}
        if needed:
            catalog.customers.update(load_close_catalog(conn, customer_ids=needed).customers)
    return plan


def _drop_finalized_days(engine: Engine, advance: dict[_Key, _Periods]) -> None:
    """Fees in advance whose billing day's invoice is finalized already sit on it: drop them."""
    keys = sorted(advance)
    with engine.connect() as conn:
        for r in conn.execute(_FINALIZED_DAYS, {"customers": [k[0] for k in keys],
                                                "days": [k[1] for k in keys]}):
            del advance[(int(r.customer_id), r.issuing_date)]


def _rate_ending(
    engine: Engine, plan: _Schedule, held: Collection[int]
) -> tuple[dict[tuple[int, datetime], SubscriptionUsage],
           dict[int, tuple[str | None, BaseException]]]:
    """Rate together the periods that end at the same instant (one consistent read each);
    a subscription that fails alone fails its customer (``failed``: customer -> subscription,
    error)."""
    customer_of = plan.catalog.customer_of
    usage: dict[tuple[int, datetime], SubscriptionUsage] = {}
    failed: dict[int, tuple[str | None, BaseException]] = {}
    for end, ending in sorted(plan.by_end.items()):
        ending = [s for s in ending if customer_of[s.id] not in held]
        rated, errors = contain(ending, functools.partial(_rate, engine, end=end))
        for part in rated:
            usage.update(part)
        for sub, exc in errors:
            failed.setdefault(customer_of[sub.id], (sub.external_id, exc))
    return usage, failed


def _invoice_groups(
    plan: _Schedule, usage: Mapping[tuple[int, datetime], SubscriptionUsage],
    excluded: Collection[int], at: datetime, settle: timedelta,
    on_demand: tuple[str, date] | None = None,
) -> list[_Group]:
    """One invoice per customer and billing day: its amounts (``invoice_amounts``) and when it
    may be finalized (``finalization``), customers ``excluded`` (held or failed) left out."""
    catalog = plan.catalog
    groups: list[_Group] = []
    for customer_id, issuing in sorted(set(plan.grouped) | set(plan.advance)):
        if customer_id in excluded:
            continue
        customer = catalog.customers[customer_id]
        items = plan.grouped.get((customer_id, issuing), [])
        ahead = plan.advance.get((customer_id, issuing), [])
        names = catalog.subscription_names
        periods: list[PeriodInput] = []
        for sub, period in items:
            info, upgraded = catalog.plans[sub.plan_id], sub.id in plan.upgraded
            # charges billed monthly: the yearly fee first, on the month ending its period
            fee = split_fee_input(sub, period, info, upgraded, names.get(sub.id))
            periods += [] if fee is None else [fee]
            periods.append(period_input(sub, period, info, usage[(sub.id, period.period_start)],
                                        upgraded, names.get(sub.id)))
        amounts = invoice_amounts(
            (items or ahead)[0][0].currency, periods, customer.tax_codes, catalog.taxes,
            customer.entity.tax_codes if customer.entity else (),
            advance=[period_input(sub, period, catalog.plans[sub.plan_id], None,
                                  subscription_name=names.get(sub.id))
                     for sub, period in ahead])
        grace = timedelta(0 if on_demand == (customer.external_id, issuing)
                          else customer.grace_days)
        finalize_after, due = finalization(
            at, grace,
            plan.issued_at[(customer_id, issuing)] if ahead else None,
            max(_known_from(plan, s, p) for s, p in items) if items else None,
            plan.watermark, settle,
        )
        groups.append(_Group(
            customer, issuing, items, amounts, finalize_after, due,
            plan_versions={s.id: catalog.plans[s.plan_id].version_id for s, _ in [*items, *ahead]},
            advance=ahead,
        ))
    return groups


def _known_from(plan: _Schedule, sub: SubscriptionInfo, period: BillingPeriod) -> datetime:
    """Where a period's wait for the watermark and the grace period counts from: its end, or,
    for a row a plan change touched, the moment the change was recorded when that is later
    (a backdated change makes periods whose end has long passed; their usage may still be
    arriving, so they wait like any period that has just ended)."""
    changed = plan.changed_at.get(sub.id)
    return period.to_datetime if changed is None else max(period.to_datetime, changed)


def _rate(
    engine: Engine, subs: Sequence[SubscriptionInfo], end: datetime
) -> dict[tuple[int, datetime], SubscriptionUsage]:
    out: dict[tuple[int, datetime], SubscriptionUsage] = {}
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            inputs = read_inputs(conn, subs, end)
            for sub in subs:
                failpoint("invoices.rate_subscription", sub)
                period = inputs.periods[sub.id]
                out[(sub.id, period.period_start)] = rate_subscription(
                    sub, inputs.charges_of(sub), period,
                    inputs.states.get(sub.id, {}), event_values_reader(conn, sub, period),
                )
    return out


@task(name="close-periods", **transient_retries(retries=3, backoff_factor=1))
def close_periods_task(
    at: datetime, skip_customers: list[str] | None = None
) -> summaries.CloseSummary:
    """Close the periods ended by ``at`` (drafts refreshed, due invoices finalized); a
    customer whose close fails alone is contained and reported."""
    return close_periods(billing_engine(), at, skip_customers=set(skip_customers or ())).as_dict()
