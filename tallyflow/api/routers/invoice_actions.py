"""Lago's ``PUT /api/v1/invoices/{id}/finalize`` and ``PUT /api/v1/invoices/{id}/refresh``:
the period close (``tasks.invoicing.close_periods``) run now for the invoice's customer, so a
draft is rated by the very code the hourly cycle uses.

- ``refresh`` (Lago's ``Invoices::RefreshDraftService``): the customer's drafts are rewritten
  from the usage rated now. It is the hourly close, run early: a draft whose time has come
  (watermark, settle delay and grace period passed) is finalized by it, as the next hourly
  run would. A finalized or voided invoice is answered as it is (Lago's does nothing).
- ``finalize`` (Lago's ``RefreshDraftAndFinalizeService``): only a draft (else 404, as Lago's
  ``invoices.draft.find_by``). The customer's ``invoice_grace_period`` is skipped for this
  invoice (the grace period is the time to look at a draft; asking to finalize ends it), but
  the ingest watermark must have passed the period end plus the settle delay
  (``TALLYFLOW_INVOICE_SETTLE_HOURS``): before that, events of the period may still be
  loading, and a finalized invoice can never take them. Refused then with 422
  ``usage_not_settled``, and nothing finalized.

docs/api.md "Finalize and refresh".
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import AUTH, get_engine
from tallyflow.api.lago import LagoError, LagoJSON, not_found
from tallyflow.api.objects import lago_invoices

router = APIRouter(prefix="/api/v1/invoices", tags=["invoices"], dependencies=AUTH)


@router.put("/{lago_id}/refresh")
async def refresh_invoice(lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """The invoice after its customer's close ran now (unchanged unless a draft)."""
    return await run_in_threadpool(_run, engine, lago_id, False)


@router.put("/{lago_id}/finalize")
async def finalize_invoice(lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """The draft finalized now, grace period skipped; 422 ``usage_not_settled`` while the
    ingest watermark has not passed its period end plus the settle delay."""
    return await run_in_threadpool(_run, engine, lago_id, True)


def _run(engine: Engine, lago_id: str, finalize: bool) -> LagoJSON:
    from tallyflow.tasks.invoicing import close_periods, find_invoice, invoice_standing

    standing = invoice_standing(engine, lago_id)
    if standing is None or (finalize and standing[0] != "draft"):
        raise not_found("invoice")
    status, issuing, customer = standing
    watermark = None
    if status == "draft":
        on_demand: tuple[str, date] | None = (customer, issuing) if finalize else None
        summary = close_periods(engine, datetime.now(UTC), customers=[customer],
                                on_demand=on_demand)
        watermark = summary.watermark
        own = [f for f in summary.failed if f["customer"] == customer]
        if own:
            raise LagoError(422, "validation_errors", {"invoice": ["close_failed"]},
                            extra={"tallyflow_messages": {"invoice": [
                                str(f["error"]) for f in own]}})
    invoice = find_invoice(engine, lago_id)
    if invoice is None:  # a draft whose periods no longer bill (e.g. all voided)
        raise not_found("invoice")
    if finalize and invoice["status"] == "draft":
        raise _not_settled(watermark)
    return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})


def _not_settled(watermark: Any) -> LagoError:
    from tallyflow.tasks.invoicing import settle_hours

    return LagoError(422, "validation_errors", {"invoice": ["usage_not_settled"]},
                     extra={"tallyflow_messages": {"invoice": [
                         f"the ingest watermark ({watermark or 'none yet'}) has not passed"
                         f" the period end plus the settle delay ({settle_hours()} h):"
                         " events of the period may still be loading"]}})
