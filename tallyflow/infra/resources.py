"""Assemble what a command or flow needs, once, for whichever environment it runs in.

Two environments, decided here and nowhere else:

- *interactive* (the CLI, a notebook, a test): no database URL means this machine's embedded
  PostgreSQL, and pending migrations are applied, so one person on one machine never has to
  think about either;
- *deployed* (a flow run started by a deployment: served by ``tallyflow serve`` or picked up by
  a worker): the database must be configured (``TALLYFLOW_DATABASE_URL``, or the embedded server
  chosen explicitly with ``TALLYFLOW_EMBEDDED=1`` / ``tallyflow serve --embedded``), and the
  schema must already be current. A deployed run never migrates: schema changes are a deploy
  step (``tallyflow db upgrade``) that a person takes on purpose, not a side effect of whichever
  worker starts first.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tallyflow.infra import db, migrate
from tallyflow.infra.settings import (
    DATABASE_URL_ENV,
    EMBEDDED_ENV,
    configured_database_url,
    embedded_opted_in,
)


class ResourceError(RuntimeError):
    """A resource is missing or unusable; the message says what to do (one line)."""


def deployed_run() -> bool:
    """True inside a flow run that a deployment started (served or on a worker).

    Read from the flow run in context: ``prefect.runtime.deployment.id`` asks the API for the
    flow run on every call (it looks for ``deployment_id`` on the context, which has none),
    which cost a small CLI ingest four round trips.
    """
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return context.flow_run.deployment_id is not None
    if TaskRunContext.get() is None:
        return False
    try:  # a task without its flow's context (a task run on another worker): ask the API
        from prefect import runtime

        return bool(runtime.deployment.id)
    except Exception:
        return False


def resolve_database_url(deployed: bool) -> str | None:
    """The URL to use, or None for the embedded server; refuses to guess for deployed runs."""
    configured = configured_database_url()
    if configured:
        return configured
    if deployed and not embedded_opted_in():
        raise ResourceError(
            f"no database configured for this deployed run: set {DATABASE_URL_ENV} on the "
            f"worker (or {EMBEDDED_ENV}=1 / `tallyflow serve --embedded` to use this machine's "
            "embedded PostgreSQL on purpose)"
        )
    return None


def billing_engine(url: str | None = None, *, deployed: bool | None = None) -> Engine:
    """The engine for billing data, its schema current (interactive) or checked (deployed)."""
    is_deployed = deployed_run() if deployed is None else deployed
    engine = db.get_engine(url or resolve_database_url(is_deployed))
    if is_deployed:
        problem = migrate.schema_problem(engine)
        if problem:
            raise ResourceError(problem)
    else:
        migrate.ensure_schema(engine)
    return engine
