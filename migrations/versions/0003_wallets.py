"""wallets: credit ledger, balances, usage positions, alerts, run history

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallet_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("customers", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("wallets_touched", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("transactions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_deducted", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "amount_cents_deducted", sa.Numeric(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("corrections", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("credits_corrected", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("top_ups", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("expired", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("alerts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("negative_wallets", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("uncovered_cents", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status in ('running', 'completed', 'failed')", name=op.f("ck_wallet_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_runs")),
    )
    op.create_table(
        "wallet_alert_rules",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("threshold_credits", sa.Numeric(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind <> 'balance_below' or threshold_credits is not null",
            name=op.f("ck_wallet_alert_rules_threshold"),
        ),
        sa.CheckConstraint(
            "kind in ('balance_below', 'balance_depleted')", name=op.f("ck_wallet_alert_rules_kind")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
            name=op.f("fk_wallet_alert_rules_wallet_id_wallets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_alert_rules")),
    )
    op.create_table(
        "wallet_alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("threshold_credits", sa.Numeric(), nullable=True),
        sa.Column("credits_balance", sa.Numeric(), nullable=False),
        sa.Column("crossing", sa.Integer(), nullable=False),
        sa.Column("alert_key", sa.Text(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallet_alerts_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
            name=op.f("fk_wallet_alerts_wallet_id_wallets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_alerts")),
        sa.UniqueConstraint("alert_key", name=op.f("uq_wallet_alerts_alert_key")),
    )
    op.create_index(
        "ix_wallet_alerts_open",
        "wallet_alerts",
        ["wallet_id"],
        unique=False,
        postgresql_where=sa.text("resolved_at is null"),
    )
    op.create_table(
        "wallet_balances",
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("credits_balance", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "granted_credits_balance", sa.Numeric(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("balance_cents", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_credits", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("consumed_credits", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "consumed_amount_cents", sa.Numeric(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_wallet_balances_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
            name=op.f("fk_wallet_balances_wallet_id_wallets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("wallet_id", name=op.f("pk_wallet_balances")),
    )
    op.create_index("ix_wallet_balances_customer", "wallet_balances", ["customer_id"], unique=False)
    op.create_table(
        "wallet_transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("credits", sa.Numeric(), nullable=False),
        sa.Column("granted_credits", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_position", sa.Integer(), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "direction in ('inbound', 'outbound')", name=op.f("ck_wallet_transactions_direction")
        ),
        sa.CheckConstraint(
            "source in ('manual', 'interval', 'threshold', 'usage', 'expiration', 'initial')",
            name=op.f("ck_wallet_transactions_source"),
        ),
        sa.CheckConstraint(
            "status in ('pending', 'settled', 'failed', 'voided')",
            name=op.f("ck_wallet_transactions_status"),
        ),
        sa.CheckConstraint(
            "credits >= 0 and amount_cents >= 0", name=op.f("ck_wallet_transactions_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_wallet_transactions_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_wallet_transactions_subscription_id_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
            name=op.f("fk_wallet_transactions_wallet_id_wallets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_transactions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_wallet_transactions_idempotency_key")),
    )
    op.create_index(
        "ix_wallet_transactions_usage",
        "wallet_transactions",
        ["subscription_id", "period_start"],
        unique=False,
        postgresql_where=sa.text("source = 'usage'"),
    )
    op.create_index(
        "ix_wallet_transactions_wallet", "wallet_transactions", ["wallet_id", "id"], unique=False
    )
    op.create_table(
        "wallet_usage_positions",
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("deducted_cents", sa.Numeric(), server_default=sa.text("0"), nullable=False),
        sa.Column("revision", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_wallet_usage_positions_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_wallet_usage_positions_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id", "period_start", name=op.f("pk_wallet_usage_positions")
        ),
    )


def downgrade() -> None:
    op.drop_table("wallet_usage_positions")
    op.drop_index("ix_wallet_transactions_wallet", table_name="wallet_transactions")
    op.drop_index(
        "ix_wallet_transactions_usage",
        table_name="wallet_transactions",
        postgresql_where=sa.text("source = 'usage'"),
    )
    op.drop_table("wallet_transactions")
    op.drop_index("ix_wallet_balances_customer", table_name="wallet_balances")
    op.drop_table("wallet_balances")
    op.drop_index(
        "ix_wallet_alerts_open",
        table_name="wallet_alerts",
        postgresql_where=sa.text("resolved_at is null"),
    )
    op.drop_table("wallet_alerts")
    op.drop_table("wallet_alert_rules")
    op.drop_table("wallet_runs")
