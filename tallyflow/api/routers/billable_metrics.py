"""Lago's ``/api/v1/billable_metrics``: list, get, create, change."""

from __future__ import annotations

from tallyflow.api.objects import BILLABLE_METRICS
from tallyflow.api.routers.catalog import catalog_router

router = catalog_router(BILLABLE_METRICS)
