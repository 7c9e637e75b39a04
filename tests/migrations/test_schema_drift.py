"""The migrations build the schema ``models/tables.py`` declares: Alembic's autogenerate, run
against a database migrated from nothing, finds nothing to add, drop or alter.

What the comparison leaves out, and why (each entry is a decision, not a convenience):

- ``alembic_version``: Alembic's own bookkeeping table, created by the migration runner, not a
  table of Tallyflow's.

Today the migrations create no triggers, no partitions, no staging tables and no views, so
nothing else is excluded. Autogenerate does not see triggers or CHECK constraint bodies at all;
a migration that adds either must add a test of its own. A partitioned table's partitions are
reflected as tables: when one is added, exclude its partitions here by name pattern and say so.
Staging tables (``create temporary table`` inside a task) live in a session, never in the
migrated schema, so they never show up here.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData

from models.tables import metadata
from tallyflow import migrate

EXCLUDED_TABLES = {"alembic_version": "Alembic's own bookkeeping"}


def _include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    return not (kind == "table" and name in EXCLUDED_TABLES)


def schema_differences(engine: Engine, target: MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_object": _include,
        })
        return compare_metadata(context, target)


def test_migrated_schema_matches_the_declared_tables(empty_database: Engine) -> None:
    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()
    assert schema_differences(empty_database, metadata) == []


def test_the_comparison_sees_a_drift(empty_database: Engine) -> None:
    """The check above can fail: a column the migrations never added is reported."""
    from sqlalchemy import Column, Table, Text

    migrate.upgrade(empty_database)
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    Table("customers", drifted, Column("nickname", Text), extend_existing=True)
    differences = schema_differences(empty_database, drifted)
    assert [d[0] for d in differences] == ["add_column"]
    assert differences[0][3].name == "nickname"
