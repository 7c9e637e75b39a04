"""Assemble what a command or flow needs, once, for whichever environment it runs in."""

from __future__ import annotations

from sqlalchemy import Engine

from tallyflow import db, migrate


def billing_engine(url: str | None = None) -> Engine:
    """The engine for billing data with the schema guaranteed current."""
    engine = db.get_engine(url)
    migrate.ensure_schema(engine)
    return engine
