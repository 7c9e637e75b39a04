"""Alembic environment: always runs on a connection handed in by ``tallyflow.infra.migrate``."""

from __future__ import annotations

from alembic import context

from tallyflow.models.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - alembic CLI without tallyflow
    from tallyflow.infra.db import get_engine

    connection = get_engine().connect()

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
