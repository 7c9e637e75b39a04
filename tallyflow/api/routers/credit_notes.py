"""Lago's ``/api/v1/credit_notes``: create, estimate, list, get, void, in Lago's shapes
(``tallyflow.tasks.corrections``; docs/credit-notes.md).

Tallyflow's one addition: an ``Idempotency-Key`` header on create, so a retried request finds
the note it made instead of issuing a second one (without it every call issues a note, as in
Lago). Lago's ``metadata`` is refused by name when it holds a value (not carried out).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, page_args, paginated
from tallyflow.api.schemas import (
    CreditNote,
    CreditNoteEstimate,
    CreditNoteEstimateRequest,
    CreditNoteItem,
    CreditNoteRequest,
    request_body,
)
from tallyflow.models.credit_notes import Request as NoteRequest
from tallyflow.tasks.corrections import (
    REASONS,
    CreditNoteRefused,
    Issue,
    count_credit_notes,
    estimate_credit_note,
    find_credit_note,
    issue_credit_note,
    list_credit_notes,
    void_credit_note,
)

router = APIRouter(prefix="/api/v1/credit_notes", tags=["credit_notes"], dependencies=AUTH)

_FIELDS = set(CreditNote.model_fields)
_ESTIMATE_FIELDS = set(CreditNoteEstimate.model_fields)
_ITEM_FIELDS = set(CreditNoteItem.model_fields)


def _refused(exc: CreditNoteRefused) -> LagoError:
    """Lago's answers: 404 ``<resource>_not_found``, 405 ``not_allowed`` codes, else 422."""
    if exc.status == 404:
        return LagoError(404, f"{next(iter(exc.errors))}_not_found")
    if exc.status == 405:
        return LagoError(405, next(iter(exc.errors.values()))[0])
    return invalid(exc.errors)


def _envelope(body: Any, fields: set[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    if not isinstance(body, dict) or not isinstance(body.get("credit_note"), dict):
        raise LagoError(400, "invalid_body", {"credit_note": ["must_be_an_object"]})
    note: dict[str, Any] = body["credit_note"]
    problems = {name: ["unknown_field"] for name in sorted(set(note) - fields)}
    problems.update({name: ["unknown_field"] for name in sorted(set(body) - {"credit_note"})})
    if not isinstance(note.get("invoice_id"), str) or not note["invoice_id"]:
        problems["invoice_id"] = ["value_is_mandatory"]
    return note, problems


def _items(value: Any, problems: dict[str, list[str]]) -> tuple[tuple[str, Decimal], ...]:
    if not isinstance(value, list) or not value:
        problems["items"] = ["must_be_an_array"]
        return ()
    out: list[tuple[str, Decimal]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - _ITEM_FIELDS:
            problems["items"] = ["invalid_value"]
            return ()
        fee, cents = item.get("fee_id"), item.get("amount_cents")
        try:
            amount = Decimal(str(cents)) if isinstance(cents, (int, str, Decimal)) else None
        except InvalidOperation:
            amount = None
        if not isinstance(fee, str) or amount is None or not amount.is_finite():
            problems["items"] = ["invalid_value"]
            return ()
        out.append((fee, amount))
    return tuple(out)


def _cents(note: dict[str, Any], name: str, problems: dict[str, list[str]]) -> int:
    value = note.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems[name] = ["invalid_value"]
        return 0
    return value


def _issue(body: Any, key: str | None) -> Issue:
    note, problems = _envelope(body, _FIELDS)
    if note.get("metadata") not in (None, {}):
        problems["metadata"] = ["not_supported"]
    reason = note.get("reason") or "other"
    if reason not in REASONS:
        problems["reason"] = ["value_is_invalid"]
    description = note.get("description")
    if description is not None and not isinstance(description, str):
        problems["description"] = ["invalid_value"]
    items = _items(note.get("items"), problems)
    amounts = {n: _cents(note, n, problems) for n in
               ("credit_amount_cents", "refund_amount_cents", "offset_amount_cents")}
    if problems:
        raise invalid(problems)
    return Issue(note["invoice_id"], NoteRequest(items, reason=reason, **amounts),
                 description=description, idempotency_key=key)


@router.post("", openapi_extra=request_body(CreditNoteRequest))
async def create_credit_note(
    body: Any = Depends(document_body), engine: Engine = Depends(get_engine),
    idempotency_key: str | None = Header(None),
) -> LagoJSON:
    """Issue a credit note on a finalized invoice (``credit``, ``refund``, ``offset``)."""
    issue = _issue(body, idempotency_key)
    try:
        note = await run_in_threadpool(issue_credit_note, engine, issue)
    except CreditNoteRefused as exc:
        raise _refused(exc) from None
    return LagoJSON({"credit_note": note})


@router.post("/estimate", openapi_extra=request_body(CreditNoteEstimateRequest))
async def estimate(body: Any = Depends(document_body),
                   engine: Engine = Depends(get_engine)) -> LagoJSON:
    """What a credit note on these items would credit and refund at most; writes nothing."""
    note, problems = _envelope(body, _ESTIMATE_FIELDS)
    items = _items(note.get("items"), problems)
    if problems:
        raise invalid(problems)
    try:
        result = await run_in_threadpool(estimate_credit_note, engine, note["invoice_id"], items)
    except CreditNoteRefused as exc:
        raise _refused(exc) from None
    return LagoJSON({"estimated_credit_note": result})


@router.get("")
def list_notes(request: Request, external_customer_id: str | None = None,
               invoice_id: str | None = None, paging: Paging = Depends(page_params),
               engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request, ("external_customer_id", "invoice_id"))
    page, per_page = page_args(paging.page, paging.per_page)
    filters = {"customer": external_customer_id, "invoice": invoice_id}
    total = count_credit_notes(engine, **filters)
    found = list_credit_notes(engine, **filters, limit=per_page, offset=(page - 1) * per_page)
    return LagoJSON(paginated("credit_notes", found, page, per_page, total))


@router.get("/{lago_id}")
def get_credit_note(request: Request, lago_id: str,
                    engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request)
    note = find_credit_note(engine, lago_id)
    if note is None:
        raise LagoError(404, "credit_note_not_found")
    return LagoJSON({"credit_note": note})


@router.put("/{lago_id}/void")
def void(request: Request, lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Void the credit left on a note (Lago: 405 ``no_voidable_amount`` when none is left)."""
    only_params(request)
    try:
        note = void_credit_note(engine, lago_id)
    except CreditNoteRefused as exc:
        raise _refused(exc) from None
    return LagoJSON({"credit_note": note})
