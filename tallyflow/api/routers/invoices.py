"""Lago's ``/api/v1/invoices``: list (paged in SQL) and get, the objects of ``tallyflow
invoices list/show`` (``tasks.invoice_documents``).

The list takes Lago's filters (``app/controllers/concerns/invoice_index.rb``): ``status`` or
``statuses[]``, ``payment_status`` or ``payment_statuses[]``, ``invoice_type``,
``issuing_date_from``/``issuing_date_to`` (inclusive dates); its other filters are refused by
name.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, Paging, get_engine, only_params, page_params
from tallyflow.api.lago import INVALID, LagoJSON, invalid, not_found, page_args, paginated
from tallyflow.api.objects import lago_invoices
from tallyflow.api.schemas import query_parameters

router = APIRouter(prefix="/api/v1/invoices", tags=["invoices"], dependencies=AUTH)

# Lago's values; Tallyflow's invoices are only ever some of them (a filter on another value
# matches nothing, as in Lago for an organization that has none).
STATUSES = ("draft", "finalized", "voided", "pending", "failed")
PAYMENT_STATUSES = ("pending", "succeeded", "failed")
INVOICE_TYPES = ("subscription", "add_on", "credit", "one_off", "advance_charges",
                 "progressive_billing", "pay_in_advance")
LIST_PARAMS = ("external_customer_id", "status", "statuses[]", "payment_status",
               "payment_statuses[]", "invoice_type", "issuing_date_from", "issuing_date_to")
_FILTERS = query_parameters(
    {"status": STATUSES, "payment_status": PAYMENT_STATUSES, "invoice_type": INVOICE_TYPES,
     "issuing_date_from": None, "issuing_date_to": None},
    {"statuses": STATUSES, "payment_statuses": PAYMENT_STATUSES})


def values_of(request: Request, name: str, allowed: tuple[str, ...],
              problems: dict[str, list[str]]) -> tuple[str, ...]:
    """Lago's ``name`` or ``name[]`` (Rails reads both), each value one of ``allowed``."""
    given = (*request.query_params.getlist(name), *request.query_params.getlist(f"{name}[]"))
    if any(v not in allowed for v in given):
        problems[name] = [INVALID]
    return tuple(given)


def _date(request: Request, name: str, problems: dict[str, list[str]]) -> date | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems[name] = ["invalid_date"]
        return None


@router.get("", openapi_extra=_FILTERS)
def list_invoices(request: Request, external_customer_id: str | None = None,
                  paging: Paging = Depends(page_params),
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import InvoiceQuery, count_invoices
    from tallyflow.tasks.invoicing import list_invoices as invoices

    only_params(request, LIST_PARAMS)
    page, per_page = page_args(paging.page, paging.per_page)
    problems: dict[str, list[str]] = {}
    query = InvoiceQuery(
        statuses=(*values_of(request, "status", STATUSES, problems),
                  *values_of(request, "statuses", STATUSES, problems)),
        payment_statuses=(*values_of(request, "payment_status", PAYMENT_STATUSES, problems),
                          *values_of(request, "payment_statuses", PAYMENT_STATUSES, problems)),
        issued_from=_date(request, "issuing_date_from", problems),
        issued_to=_date(request, "issuing_date_to", problems))
    kind = request.query_params.get("invoice_type")
    if kind is not None and kind not in INVOICE_TYPES:
        problems["invoice_type"] = [INVALID]
    if problems:
        raise invalid(problems)
    total = count_invoices(engine, customer=external_customer_id, invoice_type=kind,
                           query=query)
    found = invoices(engine, customer=external_customer_id, invoice_type=kind, query=query,
                     limit=per_page, offset=(page - 1) * per_page)
    return LagoJSON(paginated("invoices", lago_invoices(engine, found), page, per_page, total))


@router.get("/{lago_id}")
def get_invoice(request: Request, lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import find_invoice

    only_params(request)
    invoice = find_invoice(engine, lago_id)
    if invoice is None:
        raise not_found("invoice")
    return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})
