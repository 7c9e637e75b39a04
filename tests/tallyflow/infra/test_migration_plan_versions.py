"""Migration 0008 on a catalog written before it: every plan gets version 1 with its document,
its charges are open from the plan's creation, periods already invoiced (finalized ones too)
name version 1; it downgrades cleanly."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import text

from tallyflow.infra import db, migrate

_BEFORE = [
    "insert into billable_metrics (code, name, aggregation_type, document, digest)"
    " values ('tokens', 'Tokens', 'sum_agg', '{}', 'm')",
    "insert into plans (code, name, interval, amount_cents, amount_currency, document, digest,"
    " created_at) values ('p', 'P', 'monthly', 100, 'USD', '{\"code\": \"p\"}', 'd',"
    " '2025-01-01T00:00:00Z')",
    "insert into charges (plan_id, position, billable_metric_id, charge_model)"
    " values (1, 0, 1, 'standard')",
    "insert into customers (external_id, document, digest) values ('c', '{}', 'c')",
    "insert into subscriptions (external_id, customer_id, plan_id, subscription_at, document,"
    " digest) values ('s', 1, 1, '2025-01-01T00:00:00Z', '{}', 's')",
    "insert into invoices (lago_id, customer_id, issuing_date, currency, fees_amount_cents,"
    " taxes_amount_cents, total_amount_cents, customer, finalize_after, payment_due_date)"
    " values ('i', 1, '2025-02-01', 'USD', 100, 0, 100, '{}', now(), '2025-02-01')",
    "insert into invoice_subscriptions (subscription_id, period_start, invoice_id, period_end,"
    " from_datetime, to_datetime) values (1, '2025-01-01', 1, '2025-01-31', '2025-01-01',"
    " '2025-01-31')",
    "update invoices set status = 'finalized', sequential_id = 1, number = 'TF-001-001'",
]


def test_existing_plans_get_version_one_and_downgrade_works(
    scratch_database: Callable[[], str],
) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:
        for statement in _BEFORE:
            conn.execute(text(statement))
    migrate.upgrade(engine, "0008")
    with engine.connect() as conn:
        version = conn.execute(text(
            "select plan_id, version, effective_from::text, effective_to, document, digest"
            " from plan_versions")).one()
        charge = conn.execute(text(
            "select effective_from::text, effective_to from charges")).one()
        named = conn.execute(text("select plan_version_id from invoice_subscriptions")).scalar()
    assert tuple(version) == (1, 1, "2025-01-01 00:00:00+00", None, {"code": "p"}, "d")
    assert tuple(charge) == ("2025-01-01 00:00:00+00", None)
    assert named == 1
    with engine.connect() as conn:  # the finalized invoice's guard is back on
        triggers = conn.execute(text(
            "select tgenabled from pg_trigger where tgname = 'invoice_subscriptions_final'"
        )).scalar()
    assert triggers == "O"
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    with engine.connect() as conn:
        left = conn.execute(text(
            "select count(*) from information_schema.columns where column_name in"
            " ('effective_from', 'effective_to', 'plan_version_id')")).scalar_one()
        tables = conn.execute(text("select to_regclass('plan_versions')")).scalar()
    assert left == 0 and tables is None
