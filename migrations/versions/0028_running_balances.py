"""running balances: per-subscription running usage of the current period, refreshed
asynchronously, so a gateway's balance read is one indexed row per subscription
(docs/architecture.md §19)

Revision ID: 0028
Revises: 0026
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "running_usage",
        sa.Column("external_subscription_id", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("event_watermark", sa.BigInteger(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"], ondelete="CASCADE",
                                name=op.f("fk_running_usage_subscription_id_subscriptions")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_running_usage_customer_id_customers")),
        sa.PrimaryKeyConstraint("external_subscription_id", name=op.f("pk_running_usage")),
    )
    op.create_index("ix_running_usage_customer_id", "running_usage", ["customer_id"])
    op.create_table(
        "running_usage_watermark",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_running_usage_watermark_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_running_usage_watermark")),
    )


def downgrade() -> None:
    op.drop_table("running_usage_watermark")
    op.drop_index("ix_running_usage_customer_id", table_name="running_usage")
    op.drop_table("running_usage")
