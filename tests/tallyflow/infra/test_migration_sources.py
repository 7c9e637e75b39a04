"""Migration 0007 on a ledger written before it: existing rows are the fsspec source's, with
the defaults; events and rejects get sub-index 0; it downgrades cleanly."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import text

from tallyflow.infra import db, migrate


def test_existing_ledger_rows_are_filled_and_downgrade_works(
    scratch_database: Callable[[], str],
) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(text(
            "insert into ingest_objects (source, path, version, format)"
            " values ('file:///d', 'file:///d/a.jsonl', 'v1', 'jsonl')"))
        conn.execute(text(
            "insert into events (external_subscription_id, transaction_id, code, \"timestamp\","
            " properties, object_id, row_number) values ('s', 't', 'c', now(), '{}', 1, 1)"))
        conn.execute(text(
            "insert into rejected_rows (object_id, row_number, reason, message, raw)"
            " values (1, 2, 'missing_field', 'm', '{}')"))
    migrate.upgrade(engine, "0007")
    with engine.connect() as conn:
        ledger = conn.execute(text("select source_kind, source_spec from ingest_objects")).one()
        subs = conn.execute(text(
            "select (select sub_index from events), (select sub_index from rejected_rows)")).one()
    assert tuple(ledger) == ("fsspec", {})
    assert tuple(subs) == (0, 0)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        columns = conn.execute(text(
            "select count(*) from information_schema.columns"
            " where column_name in ('source_kind', 'source_spec', 'sub_index')")).scalar_one()
    assert columns == 0
