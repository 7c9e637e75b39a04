"""Lago's ``/api/v1/taxes``: list, get, create, change."""

from __future__ import annotations

from tallyflow.api.objects import TAXES
from tallyflow.api.routers.catalog import catalog_router

router = catalog_router(TAXES)
