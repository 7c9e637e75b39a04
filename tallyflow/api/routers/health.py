"""Tallyflow's billing health over HTTP: ``/api/v1/tallyflow/health`` (with an API key, as
``tallyflow health --json``) and Prometheus' ``/metrics`` (the same figures as gauges).

``/metrics`` takes no key, as Prometheus scrapes do: it holds counts and times only, no
customer. The figures come from ``tallyflow.tasks.health.billing_health`` (one home).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, get_engine
from tallyflow.api.lago import LagoJSON
from tallyflow.tasks.health import billing_health, metrics_text

router = APIRouter(tags=["tallyflow"])


@router.get("/api/v1/tallyflow/health", dependencies=AUTH)
def health(engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Billing health: last completed billing hour, ingest watermark and lag, objects
    failed, drafts waiting and why, contained failures, wallets below threshold or
    negative, invoices awaiting PDFs; ``ok`` and ``problems`` sum it up."""
    return LagoJSON({"health": billing_health(engine, datetime.now(UTC)).as_dict()})


@router.get("/metrics", include_in_schema=False)
def metrics(engine: Engine = Depends(get_engine)) -> Response:
    return Response(metrics_text(engine), media_type=CONTENT_TYPE_LATEST)
