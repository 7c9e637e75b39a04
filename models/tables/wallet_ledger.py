"""Wallet tables: the ledger, balances, usage positions, alert rules and alerts, runs.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, metadata
from tallyflow.models.tables.ingestion import RUN_STATUSES

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


# Running balances (migration 0028, tasks/wallets/balance.py, docs/architecture.md §19): the
# in-arrears usage of each subscription's current period, rated by an asynchronous refresh
# (never by the ingest's merge), so a gateway's balance read is a few indexed rows.
# ``event_watermark``: the highest event id this figure counted.
running_usage = Table(
    "running_usage",
    metadata,
    # keyed by the external id: a plan change's new row takes over the same figure
    Column("external_subscription_id", Text, primary_key=True),
    # the row in force when rated (its deductions are keyed by it)
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="CASCADE"),
           nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("event_watermark", BigInteger, nullable=False, server_default=text("0")),
    Column("refreshed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_running_usage_customer_id", "customer_id"),
)

# One row: the highest event id the refresh has looked past (it rescans a window below it, as
# ids are assigned before their transaction commits).
running_usage_watermark = Table(
    "running_usage_watermark",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("event_id", BigInteger, nullable=False, server_default=text("0")),
    Column("refreshed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("id = 1", name="one_row"),
)
