"""Tallyflow's billing health over HTTP: ``/api/v1/tallyflow/health`` (with an API key, as
``tallyflow health --json``) and Prometheus' ``/metrics`` (the same figures as gauges).

``/metrics`` takes no key, as Prometheus scrapes do: it holds counts and times only, no
customer. The figures come from ``tallyflow.tasks.health.billing_health`` (one home).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine

from tallyflow.api.lago import LagoJSON
from tallyflow.tasks.health import billing_health, metrics_text


def register(app: FastAPI, engine: Engine, auth: Callable[[Request], None]) -> None:
    @app.get("/api/v1/tallyflow/health", tags=["tallyflow"], dependencies=[Depends(auth)])
    def health() -> LagoJSON:
        """Billing health: last completed billing hour, ingest watermark and lag, objects
        failed, drafts waiting and why, contained failures, wallets below threshold or
        negative, invoices awaiting PDFs; ``ok`` and ``problems`` sum it up."""
        return LagoJSON({"health": billing_health(engine, datetime.now(UTC)).as_dict()})

    @app.get("/metrics", tags=["tallyflow"], include_in_schema=False)
    def metrics() -> Response:
        return Response(metrics_text(engine), media_type=CONTENT_TYPE_LATEST)
