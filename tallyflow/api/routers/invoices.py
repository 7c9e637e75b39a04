"""Lago's ``/api/v1/invoices``: list (paged in SQL) and get, the objects of ``tallyflow
invoices list/show`` (``tasks.invoice_documents``); ``POST`` a one-off invoice of add-on fees
(``tasks.invoicing.create_one_off_invoice``), as ``tallyflow invoices create`` does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found, page_args, paginated
from tallyflow.api.objects import lago_invoices
from tallyflow.api.schemas import OneOffInvoiceRequest, request_body

router = APIRouter(prefix="/api/v1/invoices", tags=["invoices"], dependencies=AUTH)


@router.get("")
def list_invoices(request: Request, external_customer_id: str | None = None,
                  status: str | None = None, paging: Paging = Depends(page_params),
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import count_invoices
    from tallyflow.tasks.invoicing import list_invoices as invoices

    only_params(request, ("external_customer_id", "status"))
    page, per_page = page_args(paging.page, paging.per_page)
    if status is not None and status not in ("draft", "finalized"):
        raise invalid({"status": ["invalid_value"]})
    filters = {"customer": external_customer_id, "status": status}
    total = count_invoices(engine, **filters)
    found = invoices(engine, **filters, limit=per_page, offset=(page - 1) * per_page)
    return LagoJSON(paginated("invoices", lago_invoices(engine, found), page, per_page, total))


@router.get("/{lago_id}")
def get_invoice(request: Request, lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import find_invoice

    only_params(request)
    invoice = find_invoice(engine, lago_id)
    if invoice is None:
        raise not_found("invoice")
    return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})


@router.post("", openapi_extra=request_body(OneOffInvoiceRequest))
async def create_invoice(request: Request, body: Any = Depends(document_body),
                         engine: Engine = Depends(get_engine)) -> LagoJSON:
    """A one-off invoice of add-on fees: finalized, numbered and paid from the wallets at
    once. With an ``Idempotency-Key`` header, a retry answers with the invoice already made."""
    key = request.headers.get("idempotency-key")
    return await run_in_threadpool(_create, engine, body, f"api:{key}" if key else None)


def _create(engine: Engine, body: Any, key: str | None) -> LagoJSON:
    from tallyflow.models.invoicing.one_off import OneOffError, parse_one_off
    from tallyflow.tasks.invoicing import create_one_off_invoice, find_invoice

    try:
        made = create_one_off_invoice(engine, parse_one_off(body), datetime.now(UTC), key)
    except OneOffError as exc:
        raise LagoError(exc.status, exc.code, exc.problems or None) from None
    invoice = find_invoice(engine, made.lago_id)
    assert invoice is not None
    return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})
