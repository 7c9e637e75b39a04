"""The migrations build the schema ``models/tables/`` declares: Alembic's autogenerate, run
against a database migrated from nothing, finds nothing to add, drop or alter.

What the comparison leaves out, and why (each entry is a decision, not a convenience):

- ``alembic_version``: Alembic's own bookkeeping table, created by the migration runner, not a
  table of Tallyflow's.

- Triggers and their functions: autogenerate does not compare them, so they cannot drift
  silently here and are pinned by behaviour instead. Today there is one,
  ``wallet_transactions_ledger`` (migration 0004: a settled ledger row never changes and no row
  is deleted), tested in ``tests/tasks/wallets/test_wallet_ledger.py``; the test below also
  checks it exists, so a migration that drops it fails here.
- CHECK constraint bodies: autogenerate does not compare them either; each is tested by the
  rows it refuses (e.g. whole minor units in ``tests/tasks/wallets/test_wallet_ledger.py``).
- Partitions: ``usage_snapshots`` is range-partitioned by month of ``as_of`` (migration 0015);
  its partitions ``usage_snapshots_YYYY_MM`` and ``usage_snapshots_default`` are reflected as
  tables of their own (with their indexes) but are declared only as the parent's
  ``postgresql_partition_by``, and months come and go with time (``tallyflow.infra.partitions``,
  ``tallyflow archive``), so they are excluded by name pattern; ``test_snapshots_are_partitioned``
  below pins the layout.
- Staging tables (``create temp table ... on commit drop`` in ``tasks/ingest/load.py`` and
  ``tasks/usage/rating.py``) live in one transaction of one session, never in the migrated
  schema, so they never show up here.
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, text

from tallyflow.infra import migrate
from tallyflow.models.tables import metadata

EXCLUDED_TABLES = {"alembic_version": "Alembic's own bookkeeping"}
# usage_snapshots' partitions (migration 0015): declared as the parent's partitioning
PARTITION_NAME = re.compile(r"usage_snapshots_(\d{4}_\d{2}|default)")


def _include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    if kind == "table" and name is not None and PARTITION_NAME.fullmatch(name):
        return False
    if kind == "index" and PARTITION_NAME.fullmatch(getattr(obj.table, "name", "")):
        return False  # a partition's copy of the parent's index
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
    # (tests/tasks/invoicing/test_invoicing.py, tests/flows/test_invoices_flow.py)
    ("invoices", "invoices_final"),
    ("invoice_fees", "invoice_fees_final"),
    ("invoice_subscriptions", "invoice_subscriptions_final"),
    ("invoice_pdfs", "invoice_pdfs_final"),
    # migration 0017: a void is never undone, its audit trail never changes
    # (tests/migrations/test_event_voids.py, tests/tasks/corrections/test_voids.py)
    ("events", "events_void_kept"),
    ("event_voids", "event_voids_kept"),
    # migration 0023: a finalized invoice's coupon credits never change
    # (tests/tasks/invoicing/test_coupons_close.py)
    ("coupon_credits", "coupon_credits_final"),
    # migration 0022: an issued credit note changes only its balance and statuses
    # (tests/migrations/test_credit_notes.py)
    ("credit_notes", "credit_notes_kept"),
    ("credit_note_items", "credit_note_items_kept"),
    ("credit_note_credits", "credit_note_credits_kept"),
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


def test_snapshots_are_partitioned(empty_database: Engine) -> None:
    """usage_snapshots is range-partitioned by as_of into UTC months, with the current and the
    next month made by the migration and a default partition; ids come from the sequence."""
    from datetime import UTC, datetime

    from tallyflow.infra.partitions import month_after, month_of, partition_name

    migrate.upgrade(empty_database)
    with empty_database.connect() as conn:
        strategy = conn.execute(text(
            "select pg_get_partkeydef('usage_snapshots'::regclass)")).scalar_one()
        bounds = dict(list(conn.execute(text(
            "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i"
            " join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'usage_snapshots'::regclass")).tuples()))
        default = conn.execute(text(
            "select pg_get_expr(adbin, adrelid) from pg_attrdef"
            " where adrelid = 'usage_snapshots'::regclass")).scalars().all()
    assert strategy == "RANGE (as_of)"
    this = month_of(datetime.now(UTC))
    assert set(bounds) == {partition_name(this), partition_name(month_after(this)),
                           "usage_snapshots_default"}
    assert bounds["usage_snapshots_default"] == "DEFAULT"
    assert bounds[partition_name(this)].startswith(f"FOR VALUES FROM ('{this:%Y-%m-01}")
    assert "nextval('usage_snapshots_id_seq'::regclass)" in default
