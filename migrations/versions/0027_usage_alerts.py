"""usage alerts: alerts on subscriptions, their thresholds and the alerts triggered
(docs/architecture.md §18)

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def _now() -> sa.TextClause:
    return sa.text("now()")


def _alerts() -> None:
    op.create_table(
        "usage_alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("subscription_external_id", sa.Text(), nullable=False),
        sa.Column("alert_type", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("billable_metric_id", sa.BigInteger(), nullable=True),
        sa.Column("previous_value", sa.Numeric(30, 5), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("period_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(),
                  nullable=False),
        sa.ForeignKeyConstraint(["billable_metric_id"], ["billable_metrics.id"],
                                name=op.f("fk_usage_alerts_billable_metric_id_billable_metrics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_alerts")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_usage_alerts_lago_id")),
    )
    op.create_index("ux_usage_alerts_live_code", "usage_alerts",
                    ["subscription_external_id", "code"], unique=True,
                    postgresql_where=sa.text("deleted_at is null"))
    op.create_index("ux_usage_alerts_live_type", "usage_alerts",
                    ["subscription_external_id", "alert_type"], unique=True,
                    postgresql_where=sa.text("deleted_at is null and billable_metric_id is null"))
    op.create_index("ux_usage_alerts_live_type_metric", "usage_alerts",
                    ["subscription_external_id", "alert_type", "billable_metric_id"],
                    unique=True,
                    postgresql_where=sa.text(
                        "deleted_at is null and billable_metric_id is not null"))


def upgrade() -> None:
    _alerts()
    op.create_table(
        "usage_alert_thresholds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("value", sa.Numeric(30, 5), nullable=False),
        sa.Column("recurring", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["usage_alerts.id"],
                                name=op.f("fk_usage_alert_thresholds_alert_id_usage_alerts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_alert_thresholds")),
    )
    op.create_index(op.f("ix_usage_alert_thresholds_alert_id"), "usage_alert_thresholds",
                    ["alert_id"])
    op.create_table(
        "triggered_alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("current_value", sa.Numeric(30, 5), nullable=False),
        sa.Column("previous_value", sa.Numeric(30, 5), nullable=False),
        sa.Column("crossed_thresholds", postgresql.JSONB(astext_type=sa.Text()),
                  nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), server_default=_now(),
                  nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["usage_alerts.id"],
                                name=op.f("fk_triggered_alerts_alert_id_usage_alerts")),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"],
                                name=op.f("fk_triggered_alerts_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggered_alerts")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_triggered_alerts_lago_id")),
    )
    op.create_index(op.f("ix_triggered_alerts_alert_id"), "triggered_alerts", ["alert_id"])


def downgrade() -> None:
    op.drop_table("triggered_alerts")
    op.drop_table("usage_alert_thresholds")
    op.drop_table("usage_alerts")
