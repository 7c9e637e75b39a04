"""Lago's ``/api/v1/customers``: list, get, create or update (Lago's POST upserts), change."""

from __future__ import annotations

from tallyflow.api.objects import CUSTOMERS
from tallyflow.api.routers.catalog import catalog_router

router = catalog_router(CUSTOMERS, upsert=True)
