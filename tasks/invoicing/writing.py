"""Writing invoices: one transaction per customer and billing day.

The invoice, its fees and periods, the finalization deduction and the number are written
together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models import number_rule
from tallyflow.models.invoicing import (
    InvoiceAmounts,
)
from tallyflow.models.lago.results import InvoiceCustomer
from tallyflow.models.lago.summaries import InvoiceOutcome
from tallyflow.models.wallets import prepaid_breakdown
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.coupons import credit_coupons, write_credits
from tallyflow.tasks.invoicing.credit_notes import consume_credit_notes
from tallyflow.tasks.invoicing.documents import render_sealed
from tallyflow.tasks.invoicing.inputs import CustomerInfo, _Group
from tallyflow.tasks.invoicing.prepaid import _numbers, _prepaid
from tallyflow.tasks.invoicing.progressive_credit import credit_progressive
from tallyflow.tasks.wallets import lock_customers


def customer_object(customer: CustomerInfo) -> InvoiceCustomer:
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
    # integers beyond 64 bits written exactly, not refused (docs/architecture.md §7)
    return number_rule.dumps(value, default=str).decode()


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
      net_payment_term, payment_due_date, billing_entity, coupons_amount_cents,
      progressive_billing_credit_amount_cents)
    select lago, cid, day, currency, fees, taxes, total, cast(applied as jsonb),
           cast(customer as jsonb), after, term, day + term, cast(entity as jsonb), coupons,
           progressive
    from unnest(cast(:lago as text[]), cast(:customers as bigint[]), cast(:days as date[]),
                cast(:currency as text[]), cast(:fees as numeric[]), cast(:taxes as numeric[]),
                cast(:total as numeric[]), cast(:applied as text[]), cast(:customer as text[]),
                cast(:after as timestamptz[]), cast(:term as integer[]),
                cast(:entity as text[]), cast(:coupons as numeric[]),
                cast(:progressive as numeric[]))
      as r(lago, cid, day, currency, fees, taxes, total, applied, customer, after, term,
           entity, coupons, progressive)
    order by cid, day
    on conflict (customer_id, issuing_date, invoice_type)
      where invoice_type = 'subscription' and voided_invoice_id is null
    do update set
      currency = excluded.currency, fees_amount_cents = excluded.fees_amount_cents,
      taxes_amount_cents = excluded.taxes_amount_cents,
      total_amount_cents = excluded.total_amount_cents,
      prepaid_credit_amount_cents = 0, prepaid_granted_credit_amount_cents = null,
      prepaid_purchased_credit_amount_cents = null, applied_taxes = excluded.applied_taxes,
      customer = excluded.customer, finalize_after = excluded.finalize_after,
      net_payment_term = excluded.net_payment_term,
      payment_due_date = excluded.payment_due_date,
      billing_entity = excluded.billing_entity,
      coupons_amount_cents = excluded.coupons_amount_cents,
      progressive_billing_credit_amount_cents
        = excluded.progressive_billing_credit_amount_cents, updated_at = now()
    returning v.id, v.customer_id, v.issuing_date
    """
)


_SETTLE = text(
    """
    update invoices v set prepaid_credit_amount_cents = r.prepaid,
      prepaid_granted_credit_amount_cents = r.granted,
      prepaid_purchased_credit_amount_cents = r.purchased,
      credit_notes_amount_cents = r.noted,
      total_amount_cents = r.total, sequential_id = r.seq, number = r.number, updated_at = now()
    from unnest(cast(:ids as bigint[]), cast(:prepaid as numeric[]), cast(:total as numeric[]),
                cast(:seq as integer[]), cast(:number as text[]), cast(:granted as numeric[]),
                cast(:purchased as numeric[]), cast(:noted as numeric[]))
      as r(id, prepaid, total, seq, number, granted, purchased, noted)
    where v.id = r.id
    """
)


# The documents go through COPY into a stage: a text[] parameter of thousands of invoice
# documents costs more to encode than the rest of the batch's SQL.
_SEAL_STAGE = text("create temp table tf_seal_stage (id bigint, html text) on commit drop")
_SEAL = text(
    """
    update invoices v set status = 'finalized', finalized_at = now(), html = r.html,
      updated_at = now()
    from tf_seal_stage r
    where v.id = r.id
    """
)
_FEE_COLUMNS = (
    "lago_id", "invoice_id", "position", "subscription_id", "external_subscription_id",
    "item_type", "code", "name", "invoice_display_name", "filter_invoice_display_name",
    "grouped_by", "charge_id", "true_up", "units", "events_count", "amount_cents",
    "precise_amount_cents", "precise_coupons_amount_cents", "taxes_rate",
    "taxes_precise_amount_cents", "taxes_amount_cents",
    "total_amount_cents", "applied_taxes", "from_datetime", "to_datetime",
)


def _copy(conn: Connection, table: str, columns: Sequence[str],
          rows: Sequence[Sequence[Any]]) -> None:
    """COPY rows into ``table`` (its triggers and constraints apply as to an INSERT)."""
    pg = conn.connection.driver_connection
    with pg.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f"copy {table} ({', '.join(columns)}) from stdin") as copy:
            for row in rows:
                copy.write_row(row)


def _upsert_params(live: Sequence[_Group]) -> dict[str, object]:
    """The drafts' rows as the arrays of ``_UPSERT``."""
    return {
        "lago": [str(uuid.uuid4()) for _ in live],
        "customers": [g.customer.id for g in live],
        "days": [g.issuing_date for g in live],
        "currency": [g.amounts.currency for g in live],
        "fees": [g.amounts.fees_amount_cents for g in live],
        "taxes": [g.amounts.taxes_amount_cents for g in live],
        "total": [g.amounts.total_amount_cents for g in live],
        "applied": [_json(_applied_taxes(g.amounts)) for g in live],
        "customer": [_json(customer_object(g.customer)) for g in live],
        "after": [g.finalize_after for g in live],
        "term": [g.customer.net_payment_term for g in live],
        "entity": [_json(dict(g.customer.entity.document)) if g.customer.entity
                   else None for g in live],
        "coupons": [g.amounts.coupons_amount_cents for g in live],
        "progressive": [g.amounts.progressive_billing_credit_amount_cents for g in live],
    }


def _write_batch(
    engine: Engine, groups: Sequence[_Group], at: datetime
) -> list[InvoiceOutcome | None]:
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
        for group in groups:
            failpoint("invoices.write_customer", group.customer)
        keys = {"customers": [g.customer.id for g in groups],
                "days": [g.issuing_date for g in groups]}
        existing = {(r.customer_id, r.issuing_date): r for r in conn.execute(_EXISTING, keys)}
        # a voided invoice's day stays closed (docs/architecture.md §13)
        live = [g for g in groups
                if g.key not in existing or existing[g.key].status == "draft"]
        # What progressive invoices billed, before the coupons (Lago's order, §20); drafts too
        shown = credit_progressive(conn, live)
        # Coupons: a step of their own between the fees and the taxes, at finalization only
        # (tasks/invoicing/coupons.py)
        coupon_credits = credit_coupons(conn, [g for g in live if g.due])
        drafts = [existing[g.key].id for g in live if g.key in existing]
        if drafts:
            conn.execute(text("delete from invoice_fees"
                              " where invoice_id = any(cast(:ids as bigint[]))"), {"ids": drafts})
            conn.execute(text("delete from invoice_subscriptions"
                              " where invoice_id = any(cast(:ids as bigint[]))"), {"ids": drafts})
        ids: dict[tuple[int, date], int] = {}
        if live:
            rows = conn.execute(_UPSERT, _upsert_params(live))
            ids = {(r.customer_id, r.issuing_date): r.id for r in rows}
            _insert_parts(conn, [(ids[g.key], g) for g in live])
            write_credits(conn, coupon_credits, ids,
                          {g.key: g.amounts.currency for g in live}, at)
            failpoint("invoices.after_coupons")
        failpoint("invoices.after_draft")
        consume_credit_notes(conn, live, ids)  # after taxes, before prepaid credits (§14)
        prepaid, granted = _prepaid(conn, live, ids, at, shown)
        failpoint("invoices.after_deduction")
        numbers = _numbers(conn, [g for g in live if g.due])
        settled = {g.key: g.amounts.with_prepaid(int(prepaid[g.key])) for g in live}
        if live:
            conn.execute(_SETTLE, {
                **_split(live, settled, granted),
                "ids": [ids[g.key] for g in live],
                "prepaid": [settled[g.key].prepaid_credit_amount_cents for g in live],
                "noted": [settled[g.key].credit_notes_amount_cents for g in live],
                "total": [settled[g.key].total_amount_cents for g in live],
                "seq": [numbers[g.key][0] if g.key in numbers else None for g in live],
                "number": [numbers[g.key][1] if g.key in numbers else None for g in live],
            })
        due = [ids[g.key] for g in live if g.due]
        failpoint("invoices.before_seal")
        if due:
            # Documents of the final state (numbered, finalized now), written by the seal;
            # then the triggers refuse any later change.
            documents = render_sealed(conn, due)
            conn.execute(_SEAL_STAGE)
            _copy(conn, "tf_seal_stage", ("id", "html"), [(i, documents[i]) for i in due])
            conn.execute(_SEAL)
            announce_invoices(conn, due)
    failpoint("invoices.after_commit")
    written = {g.key for g in live}
    return [None if g.key not in written else {
        "invoice_id": ids[g.key], "number": numbers[g.key][1] if g.key in numbers else None,
        "customer": g.customer.external_id, "status": "finalized" if g.due else "draft",
        "issuing_date": g.issuing_date.isoformat(), "currency": g.amounts.currency,
        "total_amount_cents": settled[g.key].total_amount_cents,
        "prepaid_credit_amount_cents": settled[g.key].prepaid_credit_amount_cents,
    } for g in groups]


def _split(
    live: Sequence[_Group], settled: Mapping[tuple[int, date], InvoiceAmounts],
    granted: Mapping[tuple[int, date], Decimal],
) -> dict[str, list[int | None]]:
    """The prepaid credits' granted and purchased parts of each invoice, as ``_SETTLE`` takes
    them (``models.wallets.prepaid_breakdown``)."""
    parts = [prepaid_breakdown(settled[g.key].prepaid_credit_amount_cents, granted[g.key])
             for g in live]
    return {"granted": [p[0] for p in parts], "purchased": [p[1] for p in parts]}


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
    rows: list[tuple[Any, ...]] = []
    for invoice_id, group in batch:
        sub_ids = group.subscriptions
        for position, fee in enumerate(group.amounts.fees):
            rows.append((
                str(uuid.uuid4()), invoice_id, position,
                sub_ids[fee.external_subscription_id], fee.external_subscription_id,
                fee.item_type, fee.code, fee.name, fee.invoice_display_name,
                fee.filter_invoice_display_name, _json(dict(fee.grouped_by)), fee.charge_id,
                fee.true_up, fee.units, fee.events_count, fee.amount_cents,
                fee.precise_amount_cents, fee.precise_coupons_amount_cents, fee.taxes_rate,
                fee.taxes_precise_amount_cents,
                fee.taxes_amount_cents, fee.total_amount_cents,
                _json([{"tax_code": t.code, "tax_name": t.name, "tax_rate": format(t.rate, "f")}
                       for t in fee.taxes]),
                fee.from_datetime, fee.to_datetime,
            ))
    if rows:
        _copy(conn, "invoice_fees", _FEE_COLUMNS, rows)
