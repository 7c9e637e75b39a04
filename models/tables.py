"""SQLAlchemy Core tables: the one description of the schema that Alembic migrations follow.

Core (not the ORM) because every hot path here is set-based SQL (COPY, INSERT ... SELECT,
ON CONFLICT); the ORM would only stand between us and Postgres. Money and quantities are
``numeric`` without a fixed scale so nothing is rounded before the explicit rounding step.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
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


def _pk() -> Column[Any]:
    return Column("id", BigInteger, Identity(always=False), primary_key=True)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def _document() -> list[Column[Any]]:
    # The normalised Lago payload as applied, for export (round trip) and for "did it change"
    # checks: re-applying an identical document is a no-op because the digest matches.
    return [
        Column("document", JSONB, nullable=False),
        Column("digest", Text, nullable=False),
    ]


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------

taxes = Table(
    "taxes",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("rate", Numeric, nullable=False),
    Column("description", Text),
    Column("applied_to_organization", Boolean, nullable=False, server_default=text("false")),
    *_document(),
    *_timestamps(),
)

# The issuer of invoices; its fields are read from the document (tallyflow.tasks.invoicing).
billing_entities = Table(
    "billing_entities",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    *_document(),
    *_timestamps(),
)

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
    # Lago's DELETE /plans/{code} (tallyflow api): the plan is kept (its subscriptions and
    # invoices refer to it) but no longer listed or subscribed to.
    Column("deleted_at", DateTime(timezone=True)),
)

# One row per version of a plan (migration 0008): the normalised document as applied and when it
# was in force. The plans row holds the current version's values; a version is never rewritten,
# only closed (effective_to) by the next one. The first version starts when the plan was first
# applied; a period priced before that uses it too (docs/architecture.md §6).
plan_versions = Table(
    "plan_versions",
    metadata,
    _pk(),
    Column("plan_id", BigInteger, ForeignKey("plans.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("effective_to", DateTime(timezone=True)),
    *_document(),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("plan_id", "version", name="uq_plan_versions_plan_version"),
    Index("uq_plan_versions_open", "plan_id", unique=True,
          postgresql_where=text("effective_to is null")),
    CheckConstraint("effective_to is null or effective_to > effective_from", name="range"),
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
    # Versioning (migration 0008): a charge row never changes once written; an apply that
    # changes it closes it (effective_to) and opens a new row, so unchanged charges keep their
    # ids. Open rows (effective_to null) are the plan's current charges, one per position.
    Column("effective_from", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("effective_to", DateTime(timezone=True)),
    Index("uq_charges_open_position", "plan_id", "position", unique=True,
          postgresql_where=text("effective_to is null")),
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
    # One row per plan in force: a plan change (models/lifecycle.py) ends the row and starts
    # one with the same external_id, so it is unique among the rows not terminated only.
    Column("external_id", Text, nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("plan_id", BigInteger, ForeignKey("plans.id"), nullable=False),
    Column("name", Text),
    Column("billing_time", Text, nullable=False, server_default=text("'calendar'")),
    Column("subscription_at", DateTime(timezone=True), nullable=False),
    Column("ending_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    # "generate" | "skip": whether a termination bills the partial period (migration 0009)
    Column("on_termination_invoice", Text, nullable=False,
           server_default=text("'generate'")),
    # A plan change's row: when it took over (its periods keep subscription_at's anchor, as
    # Lago's do) and the row it took over from (migration 0009).
    Column("started_at", DateTime(timezone=True)),
    Column("previous_subscription_id", BigInteger, ForeignKey("subscriptions.id")),
    *_document(),
    *_timestamps(),
    Index("ix_subscriptions_external_id", "external_id"),
    Index("uq_subscriptions_external_id_current", "external_id", unique=True,
          postgresql_where=text("terminated_at is null")),
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

# Every flow run's outcome. ``status`` ends completed, failed (with ``error``), cancelled or
# crashed; a run whose process died (kill -9, lost machine) stops updating ``heartbeat_at`` and
# the next command that reads or writes history marks it crashed.
RUN_STATUSES = "('running', 'completed', 'failed', 'cancelled', 'crashed')"

run_history = Table(
    "run_history",
    metadata,
    Column("flow_run_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("name", Text),
    Column("parent_flow_run_id", Text),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("error", Text),
    Column("figures", JSONB),
    Column("host", Text),
    Column("pid", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(f"status in {RUN_STATUSES}", name="status"),
    Index("ix_run_history_started_at", "started_at"),
    Index("ix_run_history_running", "heartbeat_at", postgresql_where=text("status = 'running'")),
)

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
    # Same event key as a stored event, different content: kept out, one rejected row each.
    Column("conflicts", BigInteger, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    CheckConstraint(f"status in {RUN_STATUSES}", name="status"),
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
    Column("conflicts", BigInteger, nullable=False, server_default=text("0")),
    Column("run_id", BigInteger, ForeignKey("ingest_runs.id", ondelete="SET NULL")),
    Column("discovered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ingested_at", DateTime(timezone=True)),
    Column("seconds", Numeric),
    # The source that read it (kind; mapping, format and options as JSON): re-ingest uses them.
    Column("source_kind", Text, nullable=False, server_default=text("'fsspec'")),
    Column("source_spec", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    UniqueConstraint("source", "path", "version"),
    CheckConstraint("status in ('pending', 'ingested', 'failed')", name="status"),
    Index("ix_ingest_objects_pending", "source", postgresql_where=text("status <> 'ingested'")),
)

# Events keep Lago's fields as they came. The primary key is Lago's dedup key, so the first copy
# wins and no second unique index slows every insert; ``id`` is the ingestion order (it breaks
# timestamp ties for latest_agg) and, like ``object_id``, only grows, so BRIN indexes cover both
# for a fraction of a btree's insert cost.
#
# Migration 0011 (docs/scaling.md): the key columns compare byte-wise ("C" collation): they
# are identifiers, and the locale's comparison cost every insert into the unique index.
events = Table(
    "events",
    metadata,
    Column("external_subscription_id", Text(collation="C"), primary_key=True),
    Column("transaction_id", Text(collation="C"), primary_key=True),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("code", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("precise_total_amount_cents", Numeric),
    Column("object_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    # Which of its record's events (a mapping may derive several from one record): ingestion
    # order is (object, row_number, sub_index).
    Column("sub_index", Integer, nullable=False, server_default=text("0")),
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
    Column("sub_index", Integer, nullable=False, server_default=text("0")),
    Column("field", Text),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'open'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("object_id", "row_number", "sub_index"),
)

# --------------------------------------------------------------------------------------------
# Rating (usage state, snapshots)
# --------------------------------------------------------------------------------------------

# Folding marks an ingested object as folded into ``usage_states`` in the transaction that folds
# it; the partial index keeps "what is left to fold" a lookup of the new objects only, however
# long the ledger grows. (Columns are appended here so the Ingestion section stays as it is.)
ingest_objects.append_column(Column("folded_at", DateTime(timezone=True)))
ingest_objects.append_column(Column("fold_id", BigInteger))
Index(
    "ix_ingest_objects_unfolded",
    ingest_objects.c.id,
    postgresql_where=text("status = 'ingested' and folded_at is null"),
)

# One row per fold or rebuild transaction; its id is the watermark snapshots compare against.
usage_folds = Table(
    "usage_folds",
    metadata,
    _pk(),
    Column("kind", Text, nullable=False, server_default=text("'fold'")),
    Column("metric_code", Text),
    Column("objects", Integer, nullable=False, server_default=text("0")),
    Column("events", BigInteger, nullable=False, server_default=text("0")),
    Column("folded", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind in ('fold', 'rebuild')", name="kind"),
)

# Aggregation state per (subscription, metric, period, metric filter values, group values).
# count/sum/max/weighted_sum/latest live in typed numeric columns so a fold is one
# INSERT ... SELECT ... GROUP BY ... ON CONFLICT in SQL; unique_count keeps its last operation
# per distinct value in ``state`` (jsonb), merged in Python with the pure state's merge.
usage_states = Table(
    "usage_states",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "billable_metric_id",
        BigInteger,
        ForeignKey("billable_metrics.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("filter_key", JSONB, primary_key=True),
    Column("group_key", JSONB, primary_key=True),
    Column("events_count", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable_count", BigInteger, nullable=False, server_default=text("0")),
    Column("total", Numeric, nullable=False, server_default=text("0")),
    Column("precise_total", Numeric, nullable=False, server_default=text("0")),
    Column("moment", Numeric, nullable=False, server_default=text("0")),
    Column("maximum", Numeric),
    Column("latest_value", Numeric),
    Column("latest_ts", DateTime(timezone=True)),
    Column("latest_seq", BigInteger),
    Column("state", JSONB),
    Column("fold_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The last fold that changed a subscription's state: the snapshot flow's "new events" signal.
usage_marks = Table(
    "usage_marks",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fold_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Hourly current-usage snapshots: one per (subscription, period, as_of), so a rerun of the
# same hour replaces its row instead of adding one.
usage_snapshots = Table(
    "usage_snapshots",
    metadata,
    _pk(),
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("external_subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("fold_watermark", BigInteger, nullable=False),
    Column("catalog_at", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("events_count", BigInteger, nullable=False),
    Column("usage", JSONB, nullable=False),
    Column("flow_run_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("subscription_id", "period_start", "as_of"),
    Index("ix_usage_snapshots_as_of", "as_of"),
    CheckConstraint("amount_cents = trunc(amount_cents)", name="whole_minor_units"),
)

# What the latest snapshot says is owed per (subscription, period): the wallet flow's input.
usage_amounts = Table(
    "usage_amounts",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("external_subscription_id", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("snapshot_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_cents = trunc(amount_cents)", name="whole_minor_units"),
)

# --------------------------------------------------------------------------------------------
# Wallets (prepaid credit ledger, balances, usage positions, alerts, run history)
# --------------------------------------------------------------------------------------------

# The ledger. Every credit movement is one row with a unique idempotency key, so a rerun, a
# retry or a concurrent run that would post the same movement inserts nothing. Balances are
# only ever changed by the statement that inserts (or settles) ledger rows. Nobody deletes it:
# a trigger (migration 0004, ``wallet_transactions_guard``) refuses DELETE and any UPDATE but
# pending -> settled | failed | voided, and the foreign keys RESTRICT.
wallet_transactions = Table(
    "wallet_transactions",
    metadata,
    _pk(),
    Column("wallet_id", BigInteger, ForeignKey("wallets.id", ondelete="RESTRICT"),
           nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    Column("direction", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("source", Text, nullable=False),
    # credits = amount / rate_amount; granted_credits is the part of ``credits`` that is
    # granted (free) credit, so granted-before-purchased consumption can be traced.
    Column("credits", Numeric, nullable=False),
    Column("granted_credits", Numeric, nullable=False, server_default=text("0")),
    Column("amount_cents", Numeric, nullable=False),
    Column("subscription_id", BigInteger,
           ForeignKey("subscriptions.id", ondelete="RESTRICT")),
    Column("period_start", DateTime(timezone=True)),
    Column("snapshot_id", BigInteger),
    Column("rule_position", Integer),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("run_id", BigInteger),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("note", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    CheckConstraint("direction in ('inbound', 'outbound')", name="direction"),
    CheckConstraint("status in ('pending', 'settled', 'failed', 'voided')", name="status"),
    CheckConstraint(
        "source in ('manual', 'interval', 'threshold', 'usage', 'expiration', 'initial',"
        " 'invoice')",
        name="source",
    ),
    CheckConstraint("credits >= 0 and amount_cents >= 0", name="not_negative"),
    Index("ix_wallet_transactions_wallet", "wallet_id", "id"),
    Index(
        "ix_wallet_transactions_usage",
        "subscription_id",
        "period_start",
        postgresql_where=text("source = 'usage'"),
    ),
)

# What the settled ledger says, per wallet; changed in the same statement as the ledger rows
# that move it. Its rows are also the per-customer lock (SELECT ... FOR UPDATE).
wallet_balances = Table(
    "wallet_balances",
    metadata,
    Column(
        "wallet_id",
        BigInteger,
        ForeignKey("wallets.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("credits_balance", Numeric, nullable=False, server_default=text("0")),
    Column("granted_credits_balance", Numeric, nullable=False, server_default=text("0")),
    Column("balance_cents", Numeric, nullable=False, server_default=text("0")),
    Column("pending_credits", Numeric, nullable=False, server_default=text("0")),
    Column("consumed_credits", Numeric, nullable=False, server_default=text("0")),
    Column("consumed_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("terminated_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_wallet_balances_customer", "customer_id"),
)

# Per (subscription, period): the usage amount the ledger has deducted so far and how many
# usage postings it took (the revision names the next posting's idempotency keys). A
# watermark kept in the deducting transaction, so "what changed" is one join with
# usage_amounts instead of a sum over the period's ledger.
wallet_usage_positions = Table(
    "wallet_usage_positions",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("deducted_cents", Numeric, nullable=False, server_default=text("0")),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    Column("snapshot_id", BigInteger),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Alert thresholds, independent of the catalog. wallet_id null = every wallet.
wallet_alert_rules = Table(
    "wallet_alert_rules",
    metadata,
    _pk(),
    Column("wallet_id", BigInteger, ForeignKey("wallets.id", ondelete="CASCADE")),
    Column("kind", Text, nullable=False),
    Column("threshold_credits", Numeric),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind in ('balance_below', 'balance_depleted')", name="kind"),
    CheckConstraint(
        "kind <> 'balance_below' or threshold_credits is not null", name="threshold"
    ),
)

# One row per crossing: open while the condition holds (resolved_at null), so a wallet that
# stays low alerts once; a new crossing after recovery is the next ``crossing`` number.
wallet_alerts = Table(
    "wallet_alerts",
    metadata,
    _pk(),
    Column("wallet_id", BigInteger, ForeignKey("wallets.id", ondelete="CASCADE"), nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("rule_id", BigInteger),
    Column("rule_key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("threshold_credits", Numeric),
    Column("credits_balance", Numeric, nullable=False),
    Column("crossing", Integer, nullable=False),
    Column("alert_key", Text, nullable=False, unique=True),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("run_id", BigInteger),
    Column("emitted_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_wallet_alerts_open", "wallet_id", postgresql_where=text("resolved_at is null")),
)

wallet_runs = Table(
    "wallet_runs",
    metadata,
    _pk(),
    Column("flow_run_id", Text),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("customers", Integer, nullable=False, server_default=text("0")),
    Column("wallets_touched", Integer, nullable=False, server_default=text("0")),
    Column("transactions", Integer, nullable=False, server_default=text("0")),
    Column("credits_deducted", Numeric, nullable=False, server_default=text("0")),
    Column("amount_cents_deducted", Numeric, nullable=False, server_default=text("0")),
    Column("corrections", Integer, nullable=False, server_default=text("0")),
    Column("credits_corrected", Numeric, nullable=False, server_default=text("0")),
    Column("top_ups", Integer, nullable=False, server_default=text("0")),
    Column("expired", Integer, nullable=False, server_default=text("0")),
    Column("alerts", Integer, nullable=False, server_default=text("0")),
    Column("negative_wallets", Integer, nullable=False, server_default=text("0")),
    Column("uncovered_cents", Numeric, nullable=False, server_default=text("0")),
    Column("summary", JSONB),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(f"status in {RUN_STATUSES}", name="status"),
)


# --------------------------------------------------------------------------------------------
# Invoices (period close). A finalized invoice, its fees and its periods never change: triggers
# of migration 0006 reject updates and deletes (only payment_status may still move).
# --------------------------------------------------------------------------------------------

invoices = Table(
    "invoices",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    Column("invoice_type", Text, nullable=False, server_default=text("'subscription'")),
    Column("issuing_date", Date, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'draft'")),
    Column("payment_status", Text, nullable=False, server_default=text("'pending'")),
    Column("currency", Text, nullable=False),
    Column("sequential_id", Integer),
    Column("number", Text, unique=True),
    Column("fees_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("coupons_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("credit_notes_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("prepaid_credit_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("total_amount_cents", Numeric, nullable=False),
    Column("applied_taxes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("customer", JSONB, nullable=False),
    # The issuer as it was when the invoice was made (Lago's billing_entity), or null.
    Column("billing_entity", JSONB),
    # Earliest moment it may be finalized (period end + the customer's grace period).
    Column("finalize_after", DateTime(timezone=True), nullable=False),
    # The customer's net_payment_term (days) and the day payment is due (issuing date + term).
    Column("net_payment_term", Integer, nullable=False, server_default=text("0")),
    Column("payment_due_date", Date, nullable=False),
    Column("finalized_at", DateTime(timezone=True)),
    # When the tallyflow.invoice.finalized event went out (at least once, after commit).
    Column("emitted_at", DateTime(timezone=True)),
    Column("html", Text),
    *_timestamps(),
    # One subscription invoice per customer and billing day; credit invoices (paid wallet
    # top-ups, migration 0008) are one per top-up, so the key leaves them out.
    Index("uq_invoices_customer_day", "customer_id", "issuing_date", "invoice_type",
          unique=True, postgresql_where=text("invoice_type <> 'credit'")),
    UniqueConstraint("customer_id", "sequential_id", name="uq_invoices_customer_sequence"),
    CheckConstraint("status in ('draft', 'finalized')", name="status"),
    CheckConstraint("payment_status in ('pending', 'succeeded', 'failed')",
                    name="payment_status"),
    CheckConstraint("status = 'draft' or (sequential_id is not null and number is not null)",
                    name="numbered"),
    Index("ix_invoices_status", "status"),
)

# Which subscription periods an invoice closes: a period is on at most one invoice.
invoice_subscriptions = Table(
    "invoice_subscriptions",
    metadata,
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT"),
           primary_key=True),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("from_datetime", DateTime(timezone=True), nullable=False),
    Column("to_datetime", DateTime(timezone=True), nullable=False),
    # The plan version the period was priced with (migration 0008; null: closed before 0008).
    Column("plan_version_id", BigInteger, ForeignKey("plan_versions.id", ondelete="RESTRICT")),
    Index("ix_invoice_subscriptions_invoice", "invoice_id"),
)

invoice_fees = Table(
    "invoice_fees",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("position", Integer, nullable=False),
    # Null on a credit fee (a wallet top-up belongs to no subscription).
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT")),
    Column("external_subscription_id", Text),
    Column("item_type", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("invoice_display_name", Text),
    Column("filter_invoice_display_name", Text),
    Column("grouped_by", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("charge_id", BigInteger),
    Column("true_up", Boolean, nullable=False, server_default=text("false")),
    Column("units", Numeric, nullable=False),
    Column("events_count", BigInteger, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("taxes_rate", Numeric, nullable=False),
    Column("taxes_precise_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("total_amount_cents", Numeric, nullable=False),
    Column("applied_taxes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("from_datetime", DateTime(timezone=True), nullable=False),
    Column("to_datetime", DateTime(timezone=True), nullable=False),
    # A credit fee's paid top-up (migration 0008): each is invoiced once.
    Column("wallet_transaction_id", BigInteger,
           ForeignKey("wallet_transactions.id", ondelete="RESTRICT"), unique=True),
    UniqueConstraint("invoice_id", "position", name="uq_invoice_fees_position"),
    CheckConstraint("item_type in ('subscription', 'charge', 'commitment', 'credit')",
                    name="item_type"),
    CheckConstraint("(item_type = 'credit') = (wallet_transaction_id is not null)"
                    " and (item_type = 'credit' or subscription_id is not null)",
                    name="credit_fee"),
)

# The PDF of a finalized invoice, made from its kept HTML right after finalization (outside the
# closing transaction: ~30 ms a page would hold the customers' locks). Written once: a trigger
# rejects updates and deletes.
invoice_pdfs = Table(
    "invoice_pdfs",
    metadata,
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           primary_key=True),
    Column("pdf", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# API keys of `tallyflow api` (Lago's `Authorization: Bearer <key>`). Only a SHA-256 of the
# key is stored: a leaked database does not give working keys. ``prefix`` (the key's first
# characters) lets people tell keys apart in `tallyflow api-keys list`. Revoked keys stay as a
# record of who had access; they no longer authenticate.
api_keys = Table(
    "api_keys",
    metadata,
    _pk(),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)
