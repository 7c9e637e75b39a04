"""Lago's ``/api/v1/subscriptions``: list, get, create, change, and DELETE (terminate, where
the subscription lifecycle lives: ``tasks.lifecycle.terminate_subscription``)."""

from __future__ import annotations

from fastapi import Depends
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import get_engine
from tallyflow.api.lago import LagoJSON, invalid
from tallyflow.api.objects import SUBSCRIPTIONS, catalog_one
from tallyflow.api.routers.catalog import catalog_router
from tallyflow.models.credit_notes import TERMINATION_CHOICES

router = catalog_router(SUBSCRIPTIONS)


@router.delete("/{external_id}")
async def terminate_subscription(
    external_id: str, on_termination_invoice: str | None = None, status: str | None = None,
    on_termination_credit_note: str | None = None, engine: Engine = Depends(get_engine),
) -> LagoJSON:
    """Lago's terminate: now, with the termination invoice unless ``skip`` (as
    ``tallyflow subscriptions terminate``), and for a plan paid in advance the credit note of
    ``on_termination_credit_note`` (``credit``, Lago's default, ``refund``, ``offset``,
    ``skip``); a subscription that has not started is
    canceled (Lago asks for ``status=pending`` there: accepted, and not required)."""
    if on_termination_invoice not in (None, "generate", "skip"):
        raise invalid({"on_termination_invoice": ["value_is_invalid"]})
    if status not in (None, "active", "pending"):
        raise invalid({"status": ["value_is_invalid"]})
    if on_termination_credit_note is not None and (
            on_termination_credit_note not in TERMINATION_CHOICES):
        raise invalid({"on_termination_credit_note": ["value_is_invalid"]})
    catalog_one(engine, SUBSCRIPTIONS, external_id)  # 404 when unknown
    return await run_in_threadpool(_terminate, engine, external_id, on_termination_invoice,
                                   on_termination_credit_note)


def _terminate(engine: Engine, external_id: str, on_termination_invoice: str | None,
               on_termination_credit_note: str | None = None) -> LagoJSON:
    from tallyflow.tasks.subscriptions import LifecycleError
    from tallyflow.tasks.subscriptions import terminate_subscription as terminate

    try:
        terminate(engine, external_id, on_termination_invoice=on_termination_invoice,
                  on_termination_credit_note=on_termination_credit_note)
    except LifecycleError as exc:
        raise invalid({"subscription": [exc.message]}) from exc
    return LagoJSON({"subscription": catalog_one(engine, SUBSCRIPTIONS, external_id)})
