"""The migrations build the schema ``models/tables/`` declares: Alembic's autogenerate, run
against a database migrated from nothing, finds nothing to add, drop or alter.

What the comparison leaves out, and why (each entry is a decision, not a convenience):

- ``alembic_version``: Alembic's own bookkeeping table, created by the migration runner, not a
  table of Tallyflow's.

- Triggers and their functions: autogenerate does not compare them, so they cannot drift
  silently here and are pinned by behaviour instead. Today there is one,
  ``wallet_transactions_ledger`` (migration 0004: a settled ledger row never changes and no row
  is deleted), tested in ``tests/tasks/test_wallet_ledger.py``; the test below also checks it
  exists, so a migration that drops it fails here.
- CHECK constraint bodies: autogenerate does not compare them either; each is tested by the
  rows it refuses (e.g. whole minor units in ``tests/tasks/test_wallet_ledger.py``).
- Partitions: none today. A partitioned table's partitions are reflected as tables; when one is
  added, exclude its partitions here by name pattern and say so.
- Staging tables (``create temp table ... on commit drop`` in ``tasks/ingest.py`` and
  ``tasks/usage.py``) live in one transaction of one session, never in the migrated schema, so
  they never show up here.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, text

from tallyflow.infra import migrate
from tallyflow.models.tables import metadata

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


# What autogenerate cannot see, declared: (table, trigger) pairs the migrations must create.
TRIGGERS = {
    ("wallet_transactions", "wallet_transactions_ledger"),
    # migration 0006: finalized invoices, their fees, periods and PDFs never change
    # (tests/tasks/test_invoicing.py, tests/flows/test_invoices_flow.py)
    ("invoices", "invoices_final"),
    ("invoice_fees", "invoice_fees_final"),
    ("invoice_subscriptions", "invoice_subscriptions_final"),
    ("invoice_pdfs", "invoice_pdfs_final"),
}


def test_migrated_schema_matches_the_declared_tables(empty_database: Engine) -> None:
    migrate.upgrade(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()
    assert schema_differences(empty_database, metadata) == []
    with empty_database.connect() as conn:
        triggers = set(conn.execute(text(
            "select c.relname, t.tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid"
            " where not t.tgisinternal"
        )).tuples())
    assert triggers == TRIGGERS


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


def test_event_keys_compare_byte_wise(empty_database: Engine) -> None:
    """Migration 0011: the dedup key's columns use the "C" collation (a collation change is
    one the comparison above may not see), and dedup by equality is unaffected."""
    migrate.upgrade(empty_database)
    with empty_database.connect() as conn:
        collations = set(conn.execute(text(
            "select collation_name from information_schema.columns where table_name = 'events'"
            " and column_name in ('external_subscription_id', 'transaction_id')")).scalars())
    assert collations == {"C"}
