"""Lago's ``/api/v1/invoices``: list (paged in SQL) and get, the objects of ``tallyflow
invoices list/show`` (``tasks.invoice_documents``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, Paging, get_engine, only_params, page_params
from tallyflow.api.lago import LagoJSON, invalid, not_found, page_args, paginated
from tallyflow.api.objects import lago_invoices

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
