"""Lago's ``/api/v1/add_ons``: list, get, create, change, and DELETE (a soft delete, as Lago's
discard: the add-on is no longer listed nor billed; the fees that named it keep it)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Depends
from sqlalchemy import Engine

from tallyflow.api.deps import get_engine
from tallyflow.api.lago import LagoJSON, iso
from tallyflow.api.objects import ADD_ONS, catalog_one
from tallyflow.api.routers.catalog import catalog_router
from tallyflow.tasks.catalog import soft_delete_add_on

router = catalog_router(ADD_ONS)


@router.delete("/{code}")
def delete_add_on(code: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    add_on = catalog_one(engine, ADD_ONS, code)  # 404 add_on_not_found when unknown or deleted
    soft_delete_add_on(engine, code)
    return LagoJSON({"add_on": {**add_on, "deleted_at": iso(datetime.now(UTC))}})
