"""Lago's coupons: ``/api/v1/coupons`` (list, get, create, change, DELETE: terminate) and
``/api/v1/applied_coupons`` (list, apply), with DELETE
``/api/v1/customers/{external_customer_id}/applied_coupons/{lago_id}`` (terminate one).

A coupon is a catalog document (``tallyflow apply``'s rules); applying one goes through
``tasks.catalog.apply_coupon``, Lago's checks and refusals, and each POST applies it anew as
Lago's does (a reusable coupon may be applied several times). What the coupons credit on
invoices: docs/architecture.md §15.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.documents import document_of, error_details
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found, page_args, paginated
from tallyflow.api.objects import COUPONS, catalog_one
from tallyflow.api.routers.catalog import catalog_router
from tallyflow.api.schemas import document_request, request_body
from tallyflow.models.catalog import APPLIED_COUPON, CatalogError, CouponApplication, parse_body
from tallyflow.tasks.catalog import (
    APPLIED_FILTERS,
    CouponRefused,
    applied_coupon_object,
    applied_coupon_row,
    applied_coupons_page,
    apply_coupon,
    terminate_applied_coupon,
    terminate_coupon,
)

router = APIRouter(tags=["coupons"], dependencies=AUTH)
_coupons = catalog_router(COUPONS)


@_coupons.delete("/{code}", name="terminate_coupon")
def delete_coupon(code: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Terminated: applied to no more customers; those it is applied to keep it (Lago)."""
    catalog_one(engine, COUPONS, code)
    with engine.begin() as conn:
        terminate_coupon(conn, code, datetime.now(UTC))
    return LagoJSON({"coupon": catalog_one(engine, COUPONS, code)})


router.include_router(_coupons)


@router.get("/api/v1/applied_coupons", name="list_applied_coupons")
def list_applied(request: Request, paging: Paging = Depends(page_params),
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request, APPLIED_FILTERS)
    page, per_page = page_args(paging.page, paging.per_page)
    where = {k: v for k, v in request.query_params.items() if k in APPLIED_FILTERS}
    with engine.connect() as conn:
        rows, total = applied_coupons_page(conn, where, page, per_page)
    return LagoJSON(paginated("applied_coupons", [applied_coupon_object(r) for r in rows],
                              page, per_page, total))


# Lago's answers to a refused application (AppliedCoupons::CreateService)
_REFUSALS = {"customer_not_found": 404, "coupon_not_found": 404, "plan_overlapping": 405}


@router.post("/api/v1/applied_coupons", name="create_applied_coupon",
             openapi_extra=request_body(document_request(APPLIED_COUPON)))
async def create_applied(body: Any = Depends(document_body),
                         engine: Engine = Depends(get_engine)) -> LagoJSON:
    document = document_of(body, APPLIED_COUPON)
    return await run_in_threadpool(_apply, engine, document)


def _apply(engine: Engine, document: dict[str, Any]) -> LagoJSON:
    model, issues = parse_body(APPLIED_COUPON, document)
    if model is None or not isinstance(model, CouponApplication):
        raise invalid(error_details(APPLIED_COUPON, [
            CatalogError("request", ".".join(map(str, i.loc)), i.message) for i in issues]))
    from tallyflow.tasks.catalog import customer_deleted

    if customer_deleted(engine, document.get("external_customer_id")):
        raise not_found("customer")  # deleted (DELETE /customers/{id})
    try:
        with engine.begin() as conn:
            applied = apply_coupon(conn, model, datetime.now(UTC))
            row = applied_coupon_row(conn, row_id=applied)
    except CouponRefused as refused:
        status = _REFUSALS.get(refused.code)
        if status is None:
            raise invalid({refused.field: [refused.code]}) from refused
        raise LagoError(status, refused.code) from refused
    return LagoJSON({"applied_coupon": applied_coupon_object(row)})


def _one(engine: Engine, lago_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = applied_coupon_row(conn, lago_id)
    if row is None:
        raise not_found("applied_coupon")
    return dict(applied_coupon_object(row))


@router.delete("/api/v1/customers/{external_customer_id}/applied_coupons/{lago_id}",
               name="terminate_applied_coupon")
def delete_applied(external_customer_id: str, lago_id: str,
                   engine: Engine = Depends(get_engine)) -> LagoJSON:
    applied = _one(engine, lago_id)
    if applied["external_customer_id"] != external_customer_id:
        raise not_found("applied_coupon")
    with engine.begin() as conn:
        terminate_applied_coupon(conn, lago_id, datetime.now(UTC))
    return LagoJSON({"applied_coupon": _one(engine, lago_id)})
