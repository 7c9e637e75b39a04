"""Coupons in the catalog, and applying one to a customer (``AppliedCoupons::CreateService``).

A coupon is a catalog object like the others (document, digest; ``tasks/catalog/apply.py``).
An applied coupon is made by :func:`apply_coupon`, from a catalog ``{"applied_coupon": ...}``
document, ``POST /applied_coupons`` or ``tallyflow coupons apply``, after Lago's checks: the
coupon is active and not expired, a coupon that is not ``reusable`` is applied once per
customer, and two active coupons of a customer are never limited to the same plan or metric
(``plan_overlapping``). The customer row is locked first, as the close locks it, so an
application never races a finalization's reading of the customer's coupons.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.errors import UserError
from tallyflow.models.catalog import CouponApplication, dumps
from tallyflow.models.lago.resources import AppliedCoupon
from tallyflow.models.lago.times import iso_z
from tallyflow.models.rating.money import plain_text


class CouponRefused(UserError):
    """An application Lago refuses: ``code`` is Lago's error code (the API's answer)."""

    def __init__(self, code: str, message: str, field: str = "coupon") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True)
class _CouponRow:
    id: int
    code: str
    coupon_type: str
    amount_cents: Decimal | None
    amount_currency: str | None
    percentage_rate: Decimal | None
    frequency: str
    frequency_duration: int | None
    reusable: bool
    status: str
    expiration_at: datetime | None
    plan_codes: list[str]
    billable_metric_codes: list[str]


_COUPON = text(
    """
    select id, code, coupon_type, amount_cents, amount_currency, percentage_rate, frequency,
           frequency_duration, reusable, status, expiration_at, plan_codes,
           billable_metric_codes
    from coupons where code = :code
    """
)

# the plans and metrics the customer's active coupons are limited to, charges' metrics and
# metrics' plans included (Lago's plan_limitation_overlapping?)
_TAKEN = text(
    """
    select c.plan_codes, c.billable_metric_codes,
           coalesce((select array_agg(distinct m.code) from plans p
                     join charges ch on ch.plan_id = p.id and ch.effective_to is null
                     join billable_metrics m on m.id = ch.billable_metric_id
                     where p.code = any(c.plan_codes)), '{}') as plan_metrics
    from applied_coupons a join coupons c on c.id = a.coupon_id
    where a.customer_id = :customer and a.status = 'active'
    """
)


def _overlapping(conn: Connection, customer_id: int, coupon: _CouponRow) -> bool:
    """A limited coupon may not share a plan or a metric (directly or through a plan's
    charges) with another active limited coupon of the customer."""
    if not coupon.plan_codes and not coupon.billable_metric_codes:
        return False
    mine_metrics = set(coupon.billable_metric_codes)
    if coupon.plan_codes:
        mine_metrics |= set(conn.execute(text(
            "select distinct m.code from plans p join charges ch on ch.plan_id = p.id"
            " and ch.effective_to is null join billable_metrics m on m.id = ch.billable_metric_id"
            " where p.code = any(cast(:plans as text[]))"),
            {"plans": coupon.plan_codes}).scalars())
    for row in conn.execute(_TAKEN, {"customer": customer_id}):
        if set(row.plan_codes) & set(coupon.plan_codes):
            return True
        if (set(row.billable_metric_codes) | set(row.plan_metrics)) & mine_metrics:
            return True
    return False


def apply_coupon(
    conn: Connection, application: CouponApplication, at: datetime,
    document: dict[str, Any] | None = None, digest: str | None = None,
) -> int:
    """Apply a coupon to a customer (inside the caller's transaction); the applied coupon's
    id. ``document``/``digest``: the catalog document it comes from (None: the API, the CLI).
    Raises :class:`CouponRefused` as Lago refuses."""
    customer = conn.execute(text("select id, currency from customers where external_id = :id"
                                 " for update"),
                            {"id": application.external_customer_id}).one_or_none()
    if customer is None:
        raise CouponRefused("customer_not_found",
                            f"unknown customer {application.external_customer_id!r}",
                            "external_customer_id")
    row = conn.execute(_COUPON, {"code": application.coupon_code}).one_or_none()
    coupon = _CouponRow(**row._mapping) if row is not None else None
    if coupon is None or coupon.status != "active" or (
            coupon.expiration_at is not None and coupon.expiration_at <= at):
        raise CouponRefused("coupon_not_found", f"coupon {application.coupon_code!r} is unknown,"
                                                f" terminated or expired")
    if _overlapping(conn, customer.id, coupon):
        raise CouponRefused("plan_overlapping", f"another active coupon of customer "
                                                f"{application.external_customer_id!r} is "
                                                f"limited to the same plan or metric")
    if not coupon.reusable and conn.execute(text(
            "select 1 from applied_coupons where customer_id = :c and coupon_id = :k"),
            {"c": customer.id, "k": coupon.id}).first():
        raise CouponRefused("coupon_is_not_reusable",
                            f"coupon {coupon.code!r} is not reusable and already applied to "
                            f"customer {application.external_customer_id!r}")
    currency = application.amount_currency or coupon.amount_currency
    if (coupon.coupon_type == "fixed_amount" and customer.currency
            and currency != customer.currency):
        raise CouponRefused("currencies_does_not_match",
                            f"{currency} differs from the customer's currency "
                            f"({customer.currency})", "amount_currency")
    frequency = application.frequency or coupon.frequency
    duration = (application.frequency_duration if application.frequency_duration is not None
                else coupon.frequency_duration)
    if frequency == "recurring" and not duration:
        raise CouponRefused("value_is_mandatory", "a recurring coupon needs a"
                                                  " frequency_duration", "frequency_duration")
    amount = (application.amount_cents if application.amount_cents is not None
              else coupon.amount_cents)
    rate = application.percentage_rate or coupon.percentage_rate
    return int(conn.execute(text(
        """
        insert into applied_coupons (lago_id, coupon_id, customer_id, amount_cents,
          amount_currency, percentage_rate, frequency, frequency_duration,
          frequency_duration_remaining, document, digest, created_at, updated_at)
        values (:lago, :coupon, :customer, :amount, :currency, :rate, :frequency, :duration,
          :duration, cast(:document as jsonb), :digest, :at, :at)
        returning id
        """), {
        "lago": str(uuid.uuid4()), "coupon": coupon.id, "customer": customer.id,
        "amount": amount, "currency": currency, "rate": rate, "frequency": frequency,
        "duration": duration, "document": None if document is None else dumps(document),
        "digest": digest, "at": at,
    }).scalar_one())


def terminate_applied_coupon(conn: Connection, lago_id: str, at: datetime) -> bool:
    """Lago's ``AppliedCoupons::TerminateService``: the coupon is no longer applied to the
    invoices finalized after; its earlier credits stay. False when there is no such coupon."""
    return conn.execute(text(
        "update applied_coupons set status = 'terminated', terminated_at = coalesce("
        "terminated_at, :at), updated_at = now() where lago_id = :id returning id"),
        {"id": lago_id, "at": at}).first() is not None


def coupon_rows(conn: Connection) -> list[Any]:
    """Every coupon with how many customers it is applied to now (``tallyflow coupons list``)."""
    return list(conn.execute(text(
        "select k.*, (select count(*) from applied_coupons a where a.coupon_id = k.id"
        " and a.status = 'active') as applied from coupons k order by k.code")))


def terminate_coupon(conn: Connection, code: str, at: datetime) -> bool:
    """Lago's ``Coupons::TerminateService``: no longer applied to customers from now on; the
    applied ones go on (Lago's). False when there is no such coupon."""
    return conn.execute(text(
        "update coupons set status = 'terminated', terminated_at = coalesce(terminated_at, :at),"
        " updated_at = now() where code = :code returning id"),
        {"code": code, "at": at}).first() is not None


_APPLIED = """
    select a.lago_id, k.id as coupon_id, k.code as coupon_code, k.name as coupon_name,
           k.description as coupon_description, k.status as coupon_status,
           k.expiration_at, c.id as customer_id, c.external_id as external_customer_id,
           a.status, a.amount_cents, a.amount_currency, a.percentage_rate, a.frequency,
           a.frequency_duration, a.frequency_duration_remaining, a.created_at,
           a.terminated_at, k.coupon_type,
           coalesce((select sum(x.amount_cents) from coupon_credits x
                     where x.applied_coupon_id = a.id), 0) as credited
    from applied_coupons a join coupons k on k.id = a.coupon_id
    join customers c on c.id = a.customer_id
"""

# query parameter -> its SQL (never the caller's)
APPLIED_FILTERS = {"external_customer_id": "c.external_id", "status": "a.status",
                   "coupon_code": "k.code"}


def applied_coupons_page(conn: Connection, where: dict[str, str], page: int,
                         per_page: int) -> tuple[list[Any], int]:
    """One page of applied coupons (oldest first) and how many match ``where`` (names of
    :data:`APPLIED_FILTERS` only)."""
    clauses = [f"{APPLIED_FILTERS[name]} = :{name}" for name in where]
    condition = (" where " + " and ".join(clauses)) if clauses else ""
    count = ("select count(*) from applied_coupons a join coupons k on k.id = a.coupon_id"
             " join customers c on c.id = a.customer_id")
    total = int(conn.execute(text(count + condition), where).scalar_one())
    rows = conn.execute(text(_APPLIED + condition + " order by a.id limit :limit offset :skip"),
                        {**where, "limit": per_page, "skip": (page - 1) * per_page}).all()
    return list(rows), total


def applied_coupon_row(conn: Connection, lago_id: str | None = None,
                       row_id: int | None = None) -> Any:
    """An applied coupon by its Lago id (or its row id), None when there is none."""
    if row_id is not None:
        return conn.execute(text(f"{_APPLIED} where a.id = :id"), {"id": row_id}).first()
    return conn.execute(text(f"{_APPLIED} where a.lago_id = :id"), {"id": lago_id}).first()


def number_text(value: Decimal | None) -> str | None:
    """A rate as Lago writes a decimal column: its plain text, trailing zeros dropped."""
    return None if value is None else plain_text(value.normalize())


def applied_coupon_object(row: Any) -> AppliedCoupon:
    """Lago's ``V1::AppliedCouponSerializer``: ``amount_cents_remaining`` only for a fixed
    amount applied once."""
    once_fixed = row.frequency == "once" and row.coupon_type == "fixed_amount"
    return {
        "lago_id": row.lago_id, "lago_coupon_id": str(row.coupon_id),
        "coupon_code": row.coupon_code, "coupon_name": row.coupon_name,
        "coupon_description": row.coupon_description, "coupon_status": row.coupon_status,
        "coupon_deleted_at": None, "lago_customer_id": str(row.customer_id),
        "external_customer_id": row.external_customer_id, "status": row.status,
        "amount_cents": None if row.amount_cents is None else int(row.amount_cents),
        "amount_cents_remaining": (int(row.amount_cents) - int(row.credited)
                                   if once_fixed and row.amount_cents is not None else None),
        "amount_currency": row.amount_currency,
        "percentage_rate": number_text(row.percentage_rate),
        "frequency": row.frequency, "frequency_duration": row.frequency_duration,
        "frequency_duration_remaining": row.frequency_duration_remaining,
        "expiration_at": iso_z(row.expiration_at), "created_at": iso_z(row.created_at),
        "terminated_at": iso_z(row.terminated_at),
    }
