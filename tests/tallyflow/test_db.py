from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from tallyflow import db, migrate


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql://u:p@h:5433/d", "postgresql+psycopg://u:p@h:5433/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_normalise_url_pins_psycopg3(given: str, expected: str) -> None:
    assert db.normalise_url(given) == expected


def test_normalise_url_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        db.normalise_url("sqlite:///x.db")


def test_schema_is_at_head(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"billable_metrics", "plans", "charges", "events", "ingest_objects"} <= tables


def test_ensure_schema_is_idempotent(engine: Engine) -> None:
    migrate.ensure_schema(engine)
    migrate.ensure_schema(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
