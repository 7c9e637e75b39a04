"""Lago's objects from what tasks read: catalog objects, wallets and their transactions,
invoices with the customer fields Lago's clients require, current usage.

Every figure comes from the function the CLI prints it with: wallets from
``tasks.wallets.wallet_overview`` (``tallyflow wallets show``), invoices from
``tasks.invoice_documents`` (``tallyflow invoices list/show``); the rows from
``tasks.catalog.reads``. This module shapes, it holds no SQL (docs/architecture.md §1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Engine

from tallyflow.api.lago import catalog_object, iso, not_found, row_id
from tallyflow.models.lago.resources import (
    ApiCustomerUsage,
    ApiWallet,
    CustomerUsage,
    Invoice,
)
from tallyflow.tasks.catalog import (
    CatalogQuery,
    catalog_page,
    catalog_row,
    customer_id,
    customers_by_external_id,
    number_text,
)

# ------------------------------------------------------------------------ catalog objects


@dataclass(frozen=True)
class CatalogKind:
    """One kind of catalog object as Lago serves it: its path, its object's name (``one``)
    and its list's (``many``), where its rows are, and Lago's fields beyond the document."""

    path: str
    one: str
    many: str
    query: CatalogQuery
    extra: Callable[[Any], dict[str, Any]] = field(default=lambda row: {})
    # a list filter's values when the request gives none (Lago lists active subscriptions)
    defaults: dict[str, tuple[str, ...]] = field(default_factory=dict)
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.query.key

    @property
    def table(self) -> str:
        return self.query.table


def _customer_extra(row: Any) -> dict[str, object]:
    return {"applicable_timezone": row.timezone or "UTC", "sequential_id": row.id}


def _subscription_status(row: Any) -> str:
    """Lago's status now, from the row's moments (a downgrade's planned end is not yet a
    termination; its new row is pending until it starts)."""
    from tallyflow.models.lifecycle import effective_end, status_at

    if row.status == "canceled":
        return "canceled"
    starts = row.started_at or row.subscription_at
    return str(status_at(starts, effective_end(row.terminated_at, row.ending_at),
                         datetime.now(UTC)))


# _subscription_status in SQL (the list's ``status[]`` filter), at the statement's now()
_STATUS_SQL = (
    "(case when t.status = 'canceled' then 'canceled'"
    " when coalesce(t.started_at, t.subscription_at) > now() then 'pending'"
    " when least(t.terminated_at, t.ending_at) < now() then 'terminated' else 'active' end)")


def _subscription_extra(row: Any) -> dict[str, object]:
    return {
        "lago_customer_id": str(row.customer_id),
        "external_customer_id": row.customer_external_id,
        "plan_code": row.plan_code,
        "status": _subscription_status(row),
        "started_at": iso(row.subscription_at),
        "subscription_at": iso(row.subscription_at),
        # a canceled subscription never started: Lago gives canceled_at, no terminated_at
        "terminated_at": iso(row.terminated_at) if row.status != "canceled" else None,
        "canceled_at": iso(row.terminated_at) if row.status == "canceled" else None,
        "billing_time": row.billing_time,
    }


def _metric_extra(row: Any) -> dict[str, object]:
    return {"filters": row.document.get("filters") or []}


def _plan_extra(row: Any) -> dict[str, object]:
    """Lago's charge fields: ``lago_id`` (the open charge row at that place),
    ``lago_billable_metric_id`` and ``billable_metric_code``."""
    charges = row.document.get("charges") or []
    rows = row.open_charges or []
    # Lago's plan always lists its thresholds (progressive billing, §20), each with Lago's
    # lago_id (stable: the plan's row and the threshold's place) and the plan's times
    thresholds: dict[str, object] = {"usage_thresholds": [
        {"lago_id": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                   f"tallyflow:plan:{row.id}:usage_threshold:{i}")),
         **threshold, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}
        for i, threshold in enumerate(row.document.get("usage_thresholds") or [])]}
    if len(rows) != len(charges):  # not yet written (cannot happen after an apply)
        return thresholds
    return {**thresholds, "charges": [{**charge, "lago_id": str(found["id"]),
                         "lago_billable_metric_id": str(found["metric_id"]),
                         "billable_metric_code": found["metric_code"]}
                        for charge, found in zip(charges, rows, strict=True)]}


# The plan's open charges in order (one per place: uq_charges_open_position).
_OPEN_CHARGES = (
    ", (select json_agg(json_build_object('id', c.id, 'metric_id', m.id, 'metric_code', m.code)"
    " order by c.position) from charges c join billable_metrics m on m.id = c.billable_metric_id"
    " where c.plan_id = t.id and c.effective_to is null) as open_charges")

BILLABLE_METRICS = CatalogKind("billable_metrics", "billable_metric", "billable_metrics",
                               CatalogQuery("billable_metrics", "code"), _metric_extra)
PLANS = CatalogKind("plans", "plan", "plans",
                    CatalogQuery("plans", "code", hidden="t.deleted_at is not null",
                                 columns=_OPEN_CHARGES),
                    _plan_extra)
CUSTOMERS = CatalogKind("customers", "customer", "customers",
                        # a deleted customer (DELETE, routers/customers.py) is kept, not shown
                        CatalogQuery("customers", "external_id",
                                     hidden="(t.document ->> 'deleted_at') is not null"),
                        _customer_extra)
SUBSCRIPTIONS = CatalogKind(
    "subscriptions", "subscription", "subscriptions",
    CatalogQuery(
        "subscriptions", "external_id",
        filters={"external_customer_id": "c.external_id", "plan_code": "p.code"},
        lists={"status": _STATUS_SQL},
        columns=", c.external_id as customer_external_id, p.code as plan_code",
        join=" from subscriptions t join customers c on c.id = t.customer_id"
             " join plans p on p.id = t.plan_id",
        # the row in force now, as Lago's GET finds the active subscription (a plan change
        # keeps the external_id on several rows; a canceled one only when nothing else is)
        first="(t.status <> 'canceled') desc, (coalesce(t.started_at, t.subscription_at)"
              " <= now() and coalesce(least(t.terminated_at, t.ending_at), 'infinity')"
              " >= now()) desc, t.id desc",
    ),
    _subscription_extra,
    # Lago: app/controllers/concerns/subscription_index.rb (status [] blank -> ["active"])
    defaults={"status": ("active",)},
    allowed={"status": ("active", "pending", "terminated", "canceled")},
)
TAXES = CatalogKind("taxes", "tax", "taxes", CatalogQuery("taxes", "code"))
ADD_ONS = CatalogKind("add_ons", "add_on", "add_ons",
                      CatalogQuery("add_ons", "code", hidden="t.deleted_at is not null"))


def _coupon_extra(row: Any) -> dict[str, object]:
    """Lago's ``V1::CouponSerializer`` fields, every one present (absent ones null)."""
    return {
        "description": row.description,
        "amount_cents": None if row.amount_cents is None else int(row.amount_cents),
        "amount_currency": row.amount_currency,
        "percentage_rate": number_text(row.percentage_rate),
        "frequency": row.frequency, "frequency_duration": row.frequency_duration,
        "reusable": row.reusable, "limited_plans": bool(row.plan_codes),
        "limited_billable_metrics": bool(row.billable_metric_codes),
        "plan_codes": list(row.plan_codes),
        "billable_metric_codes": list(row.billable_metric_codes),
        "expiration": row.expiration, "expiration_at": iso(row.expiration_at),
        "terminated_at": iso(row.terminated_at),
    }


COUPONS = CatalogKind("coupons", "coupon", "coupons", CatalogQuery("coupons", "code"),
                      _coupon_extra)



def _object(kind: CatalogKind, row: Any) -> dict[str, object]:
    return catalog_object(row.document, row.id, row.created_at, row.updated_at,
                          **kind.extra(row))


def catalog_list(engine: Engine, kind: CatalogKind, where: dict[str, str], page: int,
                 per_page: int, any_of: dict[str, list[str]] | None = None,
                 ) -> tuple[list[dict[str, Any]], int]:
    """One page of objects (read in SQL) and the count of all the filter matches."""
    rows, total = catalog_page(engine, kind.query, where, page, per_page, any_of)
    return [_object(kind, row) for row in rows], total


def catalog_one(engine: Engine, kind: CatalogKind, key: str) -> dict[str, object]:
    """The object a key names; 404 ``<kind>_not_found`` when there is none (or it is
    deleted)."""
    row = catalog_row(engine, kind.query, key)
    if row is None:
        raise not_found(kind.one)
    return _object(kind, row)


# ------------------------------------------------------------------------ wallets


def wallet_row(engine: Engine, lago_id: str) -> dict[str, Any]:
    """A wallet's id, code, status and customer; 404 ``wallet_not_found``."""
    from tallyflow.tasks.wallets import wallet_row as read_wallet

    number = row_id(lago_id)
    row = read_wallet(engine, number) if number is not None else None
    if row is None:
        raise not_found("wallet")
    return row


def wallets_of(engine: Engine, external_customer_id: str) -> list[ApiWallet]:
    """The customer's wallets as ``tallyflow wallets show`` sees them, with Lago's
    ``lago_customer_id``; 404 ``customer_not_found``."""
    from tallyflow.tasks.wallets import WalletError, wallet_overview

    try:
        overview = wallet_overview(engine, external_customer_id, limit=0)
    except WalletError:
        raise not_found("customer") from None
    owner = customer_id(engine, external_customer_id)
    return [{**w, "lago_customer_id": str(owner)} for w in overview["wallets"]]


def wallet_by_id(engine: Engine, lago_id: str) -> ApiWallet:
    row = wallet_row(engine, lago_id)
    for wallet in wallets_of(engine, row["external_id"]):
        if wallet["lago_id"] == str(row["id"]):
            return wallet
    raise not_found("wallet")


# ------------------------------------------------------------------------ invoices and usage


def lago_invoices(engine: Engine, invoices: Sequence[Invoice]) -> list[dict[str, Any]]:
    """The CLI's invoice objects with what Lago's clients require besides: the customer's
    ``created_at``, ``updated_at`` and ``applicable_timezone``, and a draft's ``number`` as
    an empty string (Tallyflow numbers an invoice when it is finalized)."""
    customers = customers_by_external_id(
        engine, sorted({i["customer"]["external_id"] for i in invoices}))
    out = []
    for invoice in invoices:
        row = customers.get(invoice["customer"]["external_id"])
        extra = {} if row is None else {
            "lago_id": str(row.id), "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at), "applicable_timezone": row.timezone or "UTC"}
        out.append({**invoice, "number": invoice["number"] or "",
                    "customer": {**extra, **invoice["customer"]}})
    return out


def with_total_units(usage: CustomerUsage) -> ApiCustomerUsage:
    """Lago's ``total_aggregated_units`` beside ``units`` (the same figure here: Tallyflow
    does not bill the pricing units that make them differ in Lago). Filled in place: the
    same dict, widened to the API's shape."""
    widened = cast(dict[str, Any], usage)
    for charge in widened.get("charges_usage", []):
        charge.setdefault("total_aggregated_units", charge["units"])
        for item in charge.get("filters", []):
            item.setdefault("total_aggregated_units", item["units"])
        for group in charge.get("grouped_usage") or []:
            group.setdefault("total_aggregated_units", group["units"])
            for item in group.get("filters", []):
                item.setdefault("total_aggregated_units", item["units"])
    return cast(ApiCustomerUsage, widened)
