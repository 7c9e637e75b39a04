"""change sets: the subscriptions an hour of the billing cycle touches, durable, so an hour in
which nothing changed costs what its changes cost, not what the subscriptions cost
(docs/architecture.md §24)

Revision ID: 0031
Revises: 0028
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_sets",
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("base_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_set", sa.Boolean(), nullable=False),
        sa.Column("fold_watermark", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subscriptions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "reasons",
            sa.dialects.postgresql.JSONB(),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("as_of", name=op.f("pk_change_sets")),
    )
    op.create_table(
        "change_set_members",
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["as_of"],
            ["change_sets.as_of"],
            ondelete="CASCADE",
            name=op.f("fk_change_set_members_as_of_change_sets"),
        ),
        sa.PrimaryKeyConstraint("as_of", "subscription_id", name=op.f("pk_change_set_members")),
    )
    op.create_table(
        "change_set_bounds",
        sa.Column("subscription_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("next_boundary", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            ondelete="CASCADE",
            name=op.f("fk_change_set_bounds_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_change_set_bounds")),
    )
    op.create_index("ix_change_set_bounds_next_boundary", "change_set_bounds", ["next_boundary"])

    # usage alerts (§18) are evaluated only for what changed since the last full pass
    op.create_table(
        "alert_evaluations",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_alert_evaluations_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_evaluations")),
    )

    # when the evaluator last wrote the alert (an edit after it: ``updated_at`` is later)
    op.add_column(
        "usage_alerts", sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("usage_alerts", "evaluated_at")
    op.drop_table("alert_evaluations")
    op.drop_index("ix_change_set_bounds_next_boundary", table_name="change_set_bounds")
    op.drop_table("change_set_bounds")
    op.drop_table("change_set_members")
    op.drop_table("change_sets")
