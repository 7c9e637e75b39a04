"""Lago's ``/api/v1/plans``: list, get, create, change, and DELETE (a soft delete)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Depends
from sqlalchemy import Engine

from tallyflow.api.deps import get_engine
from tallyflow.api.lago import LagoJSON, invalid, iso
from tallyflow.api.objects import PLANS, catalog_one
from tallyflow.api.routers.catalog import catalog_router
from tallyflow.tasks.catalog import soft_delete_plan

router = catalog_router(PLANS)


@router.delete("/{code}")
def delete_plan(code: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Soft delete: kept for the subscriptions and invoices that name it, no longer
    listed. Refused while a subscription on it is live (terminate those first)."""
    plan = catalog_one(engine, PLANS, code)
    if not soft_delete_plan(engine, code):
        raise invalid({"plan": ["has_active_subscriptions"]})
    return LagoJSON({"plan": {**plan, "deleted_at": iso(datetime.now(UTC))}})
