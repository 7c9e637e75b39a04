"""Lago's ``/api/v1/invoices``: list (paged in SQL) and get, the objects of ``tallyflow
invoices list/show`` (``tasks.invoice_documents``); ``POST`` a one-off invoice of add-on fees
(``tasks.invoicing.create_one_off_invoice``), as ``tallyflow invoices create`` does; and
``POST /{id}/void`` (Lago's ``InvoicesController#void``; ``tallyflow invoices void``). Lago's
REST API has no regenerate (its "regenerate from voided" is a GraphQL mutation of its UI):
``tallyflow invoices regenerate`` is the way (docs/architecture.md §13).

The list takes Lago's filters (``app/controllers/concerns/invoice_index.rb``): ``status`` or
``statuses[]``, ``payment_status`` or ``payment_statuses[]``, ``invoice_type``,
``issuing_date_from``/``issuing_date_to`` (inclusive dates); its other filters are refused by
name.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.lago import (
    INVALID,
    LagoError,
    LagoJSON,
    invalid,
    not_found,
    page_args,
    paginated,
    read_json,
)
from tallyflow.api.objects import lago_invoices
from tallyflow.api.schemas import (
    OneOffInvoiceRequest,
    VoidInvoiceRequest,
    query_parameters,
    request_body,
)

MAX_VOID_BODY = 64 * 1024
_VOID_OPENAPI = request_body(VoidInvoiceRequest)
_VOID_OPENAPI["requestBody"]["required"] = False  # Lago's parameters are all optional

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


@router.post("/{lago_id}/void", openapi_extra=_VOID_OPENAPI)
async def void_invoice(request: Request, lago_id: str,
                       engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Void a finalized invoice, whatever its payment status (Lago's): its prepaid credits go
    back to the wallets as ledger corrections. Lago's credit note on void
    (``generate_credit_note``, ``refund_amount``, ``credit_amount``) is refused by name."""
    from tallyflow.tasks.corrections import InvoiceVoidRefused
    from tallyflow.tasks.corrections import void_invoice as void
    from tallyflow.tasks.invoicing import find_invoice

    only_params(request)
    _check_void_body(await _optional_body(request))
    try:
        await run_in_threadpool(void, engine, lago_id, datetime.now(UTC))
    except InvoiceVoidRefused as exc:
        if exc.code == "invoice_not_found":
            raise not_found("invoice") from None
        raise LagoError(405, str(exc.code)) from None
    invoice = find_invoice(engine, lago_id)
    assert invoice is not None
    return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})


async def _optional_body(request: Request) -> Any:
    """Lago's void takes its parameters optionally: an empty body is no parameter."""
    if (request.headers.get("content-length", "0") == "0"
            and "transfer-encoding" not in request.headers):
        return {}
    return await read_json(request, MAX_VOID_BODY)


def _check_void_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    known = set(VoidInvoiceRequest.model_fields)
    problems: dict[str, list[str]] = {
        name: ["unknown_field"] for name in sorted(set(body) - known)}
    # a credit note on void is not carried out here: asked for, it is refused, never ignored
    if body.get("generate_credit_note") not in (None, False, "false"):
        problems["generate_credit_note"] = ["not_supported"]
    for name in ("refund_amount", "credit_amount"):
        if body.get(name) not in (None, 0, "0"):
            problems[name] = ["not_supported"]
    if problems:
        raise invalid(problems)
