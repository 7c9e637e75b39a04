"""Catalog files in, Postgres catalog tables out (and back): load, apply, export.

An apply is all or nothing. Everything is validated first, against the files *and* what the
database already holds, inside the transaction that then writes; any error means nothing is
written and every error is returned. A transaction-level advisory lock serialises concurrent
applies, so the state validated is the state written over.

Idempotence comes from the ``digest`` column: each stored document is the normalised Lago body
and its digest is the sha256 of its canonical JSON. A document whose digest matches the stored
one is not touched at all (``updated_at`` does not move), so re-applying the same files is a
no-op and ``export -> apply`` reports everything unchanged.

Plain functions, no Prefect: the catalog is applied by the CLI (and by tests), and a partially
retried apply would be wrong anyway; the transaction is the unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import Text

from tallyflow.models import tables as t
from tallyflow.models.catalog import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    CUSTOMER,
    KINDS,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    AddOn,
    BillableMetric,
    BillingEntity,
    CatalogError,
    Coupon,
    Customer,
    Plan,
    Subscription,
    Tax,
    ValidDocument,
    Wallet,
    dumps,
    validate_documents,
)
from tallyflow.models.lago.results import CatalogApplyResult
from tallyflow.tasks.catalog import plan_versions
from tallyflow.tasks.catalog.coupons import apply_coupon
from tallyflow.tasks.catalog.files import (
    _KIND_RANK,
    LoadedDocument,
    _kind_rank,
    _load,
)
from tallyflow.tasks.catalog.state import _read_state, _State

_APPLY_LOCK = 7_305_002  # constant advisory-lock key: one catalog apply at a time per database




@dataclass
class ApplyResult:
    """What an apply did, per kind, or why it did nothing (``errors``)."""

    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    errors: list[CatalogError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())

    def to_dict(self) -> CatalogApplyResult:
        return {
            "ok": self.ok,
            "kinds": {
                kind: {
                    "created": self.created[kind],
                    "updated": self.updated[kind],
                    "unchanged": self.unchanged[kind],
                }
                for kind in KINDS
            },
            "errors": [{"file": e.file, "path": e.path, "message": e.message}
                       for e in self.errors],
        }




def apply_catalog(
    engine: Engine,
    paths: Iterable[str | Path],
    *,
    now: datetime | None = None,
    effective_at: datetime | None = None,
) -> ApplyResult:
    """Validate and upsert catalog files in one transaction; see the module docstring.

    ``now`` is the start given to new subscriptions that do not say ``subscription_at``
    (default: the current time). ``effective_at`` is when the plan versions this apply creates
    take effect (default: the current time; never in the future, always after the version it
    replaces: ``tasks.plan_versions``).
    """
    documents, load_errors = _load(paths)
    return apply_documents(engine, documents, now=now, effective_at=effective_at,
                           load_errors=load_errors)


def apply_documents(
    engine: Engine, documents: Sequence[LoadedDocument], *, now: datetime | None = None,
    effective_at: datetime | None = None, load_errors: Sequence[CatalogError] = (),
) -> ApplyResult:
    """Validate and upsert envelopes already read (files, or the API's request bodies): the
    same rules and the same all-or-nothing transaction as ``apply_catalog``."""
    documents = sorted(documents, key=lambda d: _kind_rank(d.envelope))
    at = effective_at or plan_versions.default_effective_at()
    with engine.begin() as conn:
        conn.execute(sql_text("select pg_advisory_xact_lock(:key)"), {"key": _APPLY_LOCK})
        state = _read_state(conn)
        validation = validate_documents(documents, state.catalog, now=now)
        errors = [*load_errors, *validation.errors]
        if not errors:
            stored_plans = {key: (row.id, row.digest) for key, row in state.rows[PLAN].items()}
            errors = plan_versions.check_effective_at(
                conn, validation.documents, stored_plans, at, plan_versions.default_effective_at())
        if errors:
            conn.rollback()
            return ApplyResult(errors=errors)
        return _write_all(conn, validation.documents, state, at, now)


def _write_all(
    conn: Connection, documents: Sequence[ValidDocument], state: _State, at: datetime,
    now: datetime | None = None,
) -> ApplyResult:
    result = ApplyResult()
    ids = {kind: {key: row.id for key, row in rows.items()} for kind, rows in state.rows.items()}
    for document in sorted(documents, key=lambda d: _KIND_RANK[d.kind]):
        stored = state.rows[document.kind].get(document.key)
        if stored is not None and stored.digest == document.digest:
            result.unchanged[document.kind] += 1
            continue
        writer: Callable[[Connection, ValidDocument, int | None, dict[str, dict[Any, int]]],
                         int]
        if document.kind == PLAN:
            writer = partial(_write_plan, at=at)
        elif document.kind == SUBSCRIPTION:  # plan changes take effect at the apply's moment
            writer = partial(_write_subscription, now=now)
        elif document.kind == APPLIED_COUPON:  # checked against the coupon as at the apply
            writer = partial(_write_applied_coupon, now=now)
        else:
            writer = _WRITERS[document.kind]
        row_id = writer(conn, document, stored.id if stored else None, ids)
        ids[document.kind][document.key] = row_id
        counts = result.updated if stored else result.created
        counts[document.kind] += 1
    return result


def _jsonb(value: Any) -> Any:
    """A JSONB bind parameter written by the catalog's Decimal-safe JSON writer."""
    return cast(literal(dumps(value), Text), JSONB)


def _upsert(
    conn: Connection,
    table: Table,
    row_id: int | None,
    values: dict[str, Any],
    document: ValidDocument,
) -> int:
    values = {**values, "document": _jsonb(document.document), "digest": document.digest}
    if row_id is None:
        return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())
    conn.execute(table.update().where(table.c.id == row_id).values(**values, updated_at=func.now()))
    return row_id


Ids = dict[str, dict[tuple[str, ...], int]]


def _write_tax(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    tax: Tax = doc.model
    return _upsert(
        conn,
        t.taxes,
        row_id,
        {
            "code": tax.code,
            "name": tax.name,
            "rate": tax.rate,
            "description": tax.description,
            "applied_to_organization": tax.applied_to_organization,
        },
        doc,
    )


def _write_add_on(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    # a soft-deleted add-on stays deleted: an apply changes its document, not its life
    add_on: AddOn = doc.model
    return _upsert(conn, t.add_ons, row_id, {
        "code": add_on.code, "name": add_on.name, "amount_cents": add_on.amount_cents,
        "amount_currency": add_on.amount_currency,
        "invoice_display_name": add_on.invoice_display_name,
        "description": add_on.description,
    }, doc)


def _write_billing_entity(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids
) -> int:
    entity: BillingEntity = doc.model
    return _upsert(conn, t.billing_entities, row_id,
                   {"code": entity.code, "name": entity.name}, doc)


def _write_metric(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    metric: BillableMetric = doc.model
    row_id = _upsert(
        conn,
        t.billable_metrics,
        row_id,
        {
            "code": metric.code,
            "name": metric.name,
            "description": metric.description,
            "aggregation_type": metric.aggregation_type,
            "field_name": metric.field_name,
            "recurring": metric.recurring,
            "rounding_function": metric.rounding_function,
            "rounding_precision": metric.rounding_precision,
            "weighted_interval": metric.weighted_interval,
        },
        doc,
    )
    conn.execute(
        delete(t.billable_metric_filters).where(
            t.billable_metric_filters.c.billable_metric_id == row_id
        )
    )
    if metric.filters:
        conn.execute(
            insert(t.billable_metric_filters),
            [
                {"billable_metric_id": row_id, "key": f.key, "values": list(f.values)}
                for f in metric.filters
            ],
        )
    return row_id


def _write_plan(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids,
    at: datetime | None = None,
) -> int:
    """A changed plan gets a new version (``tasks.plan_versions``): the plans row takes the new
    values, unchanged charges keep their rows and ids, changed ones are closed and reopened."""
    plan: Plan = doc.model
    at = at or plan_versions.default_effective_at()
    previous = plan_versions.previous_document(conn, row_id)
    row_id = _upsert(
        conn,
        t.plans,
        row_id,
        {
            "code": plan.code,
            "name": plan.name,
            "description": plan.description,
            "interval": plan.interval,
            "amount_cents": plan.amount_cents,
            "amount_currency": plan.amount_currency,
            "pay_in_advance": plan.pay_in_advance,
            "trial_period": plan.trial_period,
        },
        doc,
    )
    plan_versions.record_version(conn, row_id, doc, at)
    plan_versions.write_charges(conn, row_id, plan, doc.document, previous,
                                ids[BILLABLE_METRIC], at)
    return row_id


def _write_customer(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    customer: Customer = doc.model
    return _upsert(
        conn,
        t.customers,
        row_id,
        {
            "external_id": customer.external_id,
            "name": customer.name,
            "email": customer.email,
            "currency": customer.currency,
            "timezone": customer.timezone,
        },
        doc,
    )


def _write_subscription(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids, now: datetime | None = None
) -> int:
    now = now or datetime.now(UTC)
    subscription: Subscription = doc.model
    before = None if row_id is None else conn.execute(
        select(t.subscriptions.c.subscription_at, t.subscriptions.c.ending_at,
               t.subscriptions.c.plan_id, t.subscriptions.c.started_at,
               t.subscriptions.c.on_termination_invoice, t.subscriptions.c.status,
               t.subscriptions.c.on_termination_credit_note)
        .where(t.subscriptions.c.id == row_id)).one()
    if before is not None and before.status == "canceled":
        # Canceled before it started (models/lifecycle.py): a changed file subscribes again
        # under the same external id, as Lago's create does; the canceled row stays history.
        row_id, before = None, None
    plan_id = ids[PLAN][(subscription.plan_code,)]
    if row_id is not None and before is not None and before.plan_id != plan_id and (
            (before.started_at or before.subscription_at) <= now):
        # Another plan for a started subscription: Lago's upgrade or downgrade, effective from
        # this apply (recorded, so re-applying the file changes nothing).
        from tallyflow.tasks.subscriptions import start_plan_change

        new_id, _, _ = start_plan_change(conn, row_id, subscription.plan_code, now, now,
                                         dict(doc.document))
        return new_id
    row_id = _upsert(
        conn,
        t.subscriptions,
        row_id,
        {
            "external_id": subscription.external_id,
            "customer_id": ids[CUSTOMER][(subscription.external_customer_id,)],
            "plan_id": plan_id,
            "name": subscription.name,
            "billing_time": subscription.billing_time,
            "subscription_at": subscription.subscription_at,
            "ending_at": subscription.ending_at,
            # Not named in the file: the stored choice stands (a `terminate --skip-invoice`
            # is not undone by re-applying the file for another change).
            "on_termination_invoice": (subscription.on_termination_invoice
                                       or (before.on_termination_invoice if before else None)
                                       or "generate"),
            "on_termination_credit_note": (
                subscription.on_termination_credit_note
                or (before.on_termination_credit_note if before else None)),
        },
        doc,
    )
    if before is not None and (before.subscription_at, before.ending_at) != (
            subscription.subscription_at, subscription.ending_at):
        # New dates: usage state and wallet amounts follow them (models/lifecycle.py).
        from tallyflow.tasks.subscriptions import dates_changed

        dates_changed(conn, row_id, subscription.external_id, now)
    return row_id


def _write_wallet(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    """Catalog fields only; balances and the credit ledger belong to the wallet flow."""
    wallet: Wallet = doc.model
    row_id = _upsert(
        conn,
        t.wallets,
        row_id,
        {
            "customer_id": ids[CUSTOMER][(wallet.external_customer_id,)],
            "code": doc.key[1],
            "name": wallet.name,
            "currency": wallet.currency,
            "rate_amount": wallet.rate_amount,
            "paid_credits": wallet.paid_credits,
            "granted_credits": wallet.granted_credits,
            "priority": wallet.priority,
            "expiration_at": wallet.expiration_at,
        },
        doc,
    )
    conn.execute(
        delete(t.wallet_recurring_rules).where(t.wallet_recurring_rules.c.wallet_id == row_id)
    )
    if wallet.recurring_transaction_rules:
        conn.execute(
            insert(t.wallet_recurring_rules),
            [
                {
                    "wallet_id": row_id,
                    "position": position,
                    "trigger": rule.trigger,
                    "interval": rule.interval,
                    "method": rule.method,
                    "paid_credits": rule.paid_credits,
                    "granted_credits": rule.granted_credits,
                    "threshold_credits": rule.threshold_credits,
                    "target_ongoing_balance": rule.target_ongoing_balance,
                    "started_at": rule.started_at,
                    "expiration_at": rule.expiration_at,
                }
                for position, rule in enumerate(wallet.recurring_transaction_rules)
            ],
        )
    return row_id


def _write_coupon(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    """Its applied coupons keep the amount, rate and frequency they were applied with (Lago
    copies them); its limitation applies to them as it is now."""
    coupon: Coupon = doc.model
    return _upsert(conn, t.coupons, row_id, {
        "code": coupon.code, "name": coupon.name, "description": coupon.description,
        "coupon_type": coupon.coupon_type, "amount_cents": coupon.amount_cents,
        "amount_currency": coupon.amount_currency, "percentage_rate": coupon.percentage_rate,
        "frequency": coupon.frequency, "frequency_duration": coupon.frequency_duration,
        "reusable": coupon.reusable, "expiration": coupon.expiration,
        "expiration_at": coupon.expiration_at, "plan_codes": coupon.limited_plan_codes,
        "billable_metric_codes": coupon.limited_metric_codes,
    }, doc)


def _write_applied_coupon(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids, now: datetime | None = None
) -> int:
    """A new application only: a changed one is refused by validation (Lago has no update)."""
    return apply_coupon(conn, doc.model, now or datetime.now(UTC), doc.document, doc.digest)


_WRITERS = {
    TAX: _write_tax,
    BILLING_ENTITY: _write_billing_entity,
    BILLABLE_METRIC: _write_metric,
    PLAN: _write_plan,
    CUSTOMER: _write_customer,
    SUBSCRIPTION: _write_subscription,
    WALLET: _write_wallet,
    ADD_ON: _write_add_on,
    COUPON: _write_coupon,
}


