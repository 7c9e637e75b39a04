"""SQLAlchemy Core tables: the one description of the schema that Alembic migrations follow.

Core (not the ORM) because every hot path here is set-based SQL (COPY, INSERT ... SELECT,
ON CONFLICT); the ORM would only stand between us and Postgres. Money and quantities are
``numeric`` without a fixed scale so nothing is rounded before the explicit rounding step.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _pk() -> Column:
    return Column("id", BigInteger, Identity(always=False), primary_key=True)


def _timestamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def _document() -> list[Column]:
    # The normalised Lago payload as applied, for export (round trip) and for "did it change"
    # checks: re-applying an identical document is a no-op because the digest matches.
    return [
        Column("document", JSONB, nullable=False),
        Column("digest", Text, nullable=False),
    ]


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------

billable_metrics = Table(
    "billable_metrics",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("aggregation_type", Text, nullable=False),
    Column("field_name", Text),
    Column("recurring", Boolean, nullable=False, server_default=text("false")),
    Column("rounding_function", Text),
    Column("rounding_precision", Integer),
    Column("weighted_interval", Text),
    *_document(),
    *_timestamps(),
)

billable_metric_filters = Table(
    "billable_metric_filters",
    metadata,
    _pk(),
    Column(
        "billable_metric_id",
        BigInteger,
        ForeignKey("billable_metrics.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", Text, nullable=False),
    Column("values", ARRAY(Text), nullable=False),
    UniqueConstraint("billable_metric_id", "key"),
)

plans = Table(
    "plans",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("interval", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("amount_currency", Text, nullable=False),
    Column("pay_in_advance", Boolean, nullable=False, server_default=text("false")),
    Column("trial_period", Numeric),
    *_document(),
    *_timestamps(),
)

charges = Table(
    "charges",
    metadata,
    _pk(),
    Column("plan_id", BigInteger, ForeignKey("plans.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("billable_metric_id", BigInteger, ForeignKey("billable_metrics.id"), nullable=False),
    Column("charge_model", Text, nullable=False),
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("pay_in_advance", Boolean, nullable=False, server_default=text("false")),
    Column("invoiceable", Boolean, nullable=False, server_default=text("true")),
    Column("prorated", Boolean, nullable=False, server_default=text("false")),
    Column("min_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("invoice_display_name", Text),
    Column("pricing_group_keys", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    UniqueConstraint("plan_id", "position"),
)

charge_filters = Table(
    "charge_filters",
    metadata,
    _pk(),
    Column("charge_id", BigInteger, ForeignKey("charges.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("values", JSONB, nullable=False),
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("invoice_display_name", Text),
    UniqueConstraint("charge_id", "position"),
)

customers = Table(
    "customers",
    metadata,
    _pk(),
    Column("external_id", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("email", Text),
    Column("currency", Text),
    Column("timezone", Text),
    *_document(),
    *_timestamps(),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    _pk(),
    Column("external_id", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("plan_id", BigInteger, ForeignKey("plans.id"), nullable=False),
    Column("name", Text),
    Column("billing_time", Text, nullable=False, server_default=text("'calendar'")),
    Column("subscription_at", DateTime(timezone=True), nullable=False),
    Column("ending_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    *_document(),
    *_timestamps(),
)

wallets = Table(
    "wallets",
    metadata,
    _pk(),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text),
    Column("currency", Text, nullable=False),
    Column("rate_amount", Numeric, nullable=False),
    Column("paid_credits", Numeric, nullable=False, server_default=text("0")),
    Column("granted_credits", Numeric, nullable=False, server_default=text("0")),
    Column("priority", Integer, nullable=False, server_default=text("50")),
    Column("expiration_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    *_document(),
    *_timestamps(),
    UniqueConstraint("customer_id", "code"),
)

wallet_recurring_rules = Table(
    "wallet_recurring_rules",
    metadata,
    _pk(),
    Column("wallet_id", BigInteger, ForeignKey("wallets.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("interval", Text),
    Column("method", Text, nullable=False, server_default=text("'fixed'")),
    Column("paid_credits", Numeric, nullable=False, server_default=text("0")),
    Column("granted_credits", Numeric, nullable=False, server_default=text("0")),
    Column("threshold_credits", Numeric),
    Column("target_ongoing_balance", Numeric),
    Column("started_at", DateTime(timezone=True)),
    Column("expiration_at", DateTime(timezone=True)),
    UniqueConstraint("wallet_id", "position"),
)

# --------------------------------------------------------------------------------------------
# Ingestion
# --------------------------------------------------------------------------------------------

ingest_runs = Table(
    "ingest_runs",
    metadata,
    _pk(),
    Column("flow_run_id", Text),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("objects", Integer, nullable=False, server_default=text("0")),
    Column("failed_objects", Integer, nullable=False, server_default=text("0")),
    Column("accepted", BigInteger, nullable=False, server_default=text("0")),
    Column("duplicates", BigInteger, nullable=False, server_default=text("0")),
    Column("rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable", BigInteger, nullable=False, server_default=text("0")),
    Column("bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("seconds", Numeric, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
)

# The object ledger: one row per (source, path, version). A changed object is a new version and
# is ingested again (event dedup absorbs the overlap). Rows are claimed with FOR UPDATE SKIP
# LOCKED inside the transaction that loads them, so a crash simply releases the claim.
ingest_objects = Table(
    "ingest_objects",
    metadata,
    _pk(),
    Column("source", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("size", BigInteger),
    Column("modified_at", DateTime(timezone=True)),
    Column("format", Text),
    Column("compression", Text),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Column("rows", BigInteger, nullable=False, server_default=text("0")),
    Column("accepted", BigInteger, nullable=False, server_default=text("0")),
    Column("duplicates", BigInteger, nullable=False, server_default=text("0")),
    Column("rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable", BigInteger, nullable=False, server_default=text("0")),
    Column("run_id", BigInteger, ForeignKey("ingest_runs.id", ondelete="SET NULL")),
    Column("discovered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ingested_at", DateTime(timezone=True)),
    Column("seconds", Numeric),
    UniqueConstraint("source", "path", "version"),
    CheckConstraint("status in ('pending', 'ingested', 'failed')", name="status"),
    Index("ix_ingest_objects_pending", "source", postgresql_where=text("status <> 'ingested'")),
)

# Events keep Lago's fields as they came. The primary key is Lago's dedup key, so the first copy
# wins and no second unique index slows every insert; ``id`` is the ingestion order (it breaks
# timestamp ties for latest_agg) and, like ``object_id``, only grows, so BRIN indexes cover both
# for a fraction of a btree's insert cost.
events = Table(
    "events",
    metadata,
    Column("external_subscription_id", Text, primary_key=True),
    Column("transaction_id", Text, primary_key=True),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("code", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("precise_total_amount_cents", Numeric),
    Column("object_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_events_object_brin", "object_id", postgresql_using="brin"),
    Index("ix_events_id_brin", "id", postgresql_using="brin"),
)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    _pk(),
    Column(
        "object_id",
        BigInteger,
        ForeignKey("ingest_objects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("row_number", BigInteger, nullable=False),
    Column("field", Text),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'open'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("object_id", "row_number"),
)
