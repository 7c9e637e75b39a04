"""lifecycle: what a subscription's termination does about its last invoice

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29

``terminated_at`` and ``ending_at`` already exist (0001); a termination (the command, or the
catalog's ``ending_at``) now bills the partial period at once unless
``on_termination_invoice`` is ``skip`` (Lago's parameter of the terminate call). A plan change
ends a row and starts another with the same ``external_id`` (``started_at``,
``previous_subscription_id``), so ``external_id`` is unique among rows not terminated only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("on_termination_invoice", sa.Text(), server_default=sa.text("'generate'"),
                  nullable=False),
    )
    op.add_column("subscriptions",
                  sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("subscriptions",
                  sa.Column("previous_subscription_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_subscriptions_previous_subscription_id_subscriptions"), "subscriptions",
        "subscriptions", ["previous_subscription_id"], ["id"],
    )
    op.drop_constraint(op.f("uq_subscriptions_external_id"), "subscriptions", type_="unique")
    op.create_index("ix_subscriptions_external_id", "subscriptions", ["external_id"])
    op.create_index("uq_subscriptions_external_id_current", "subscriptions", ["external_id"],
                    unique=True, postgresql_where=sa.text("terminated_at is null"))


def downgrade() -> None:
    op.drop_index("uq_subscriptions_external_id_current", table_name="subscriptions")
    op.drop_index("ix_subscriptions_external_id", table_name="subscriptions")
    op.create_unique_constraint(op.f("uq_subscriptions_external_id"), "subscriptions",
                                ["external_id"])
    op.drop_constraint(op.f("fk_subscriptions_previous_subscription_id_subscriptions"),
                       "subscriptions", type_="foreignkey")
    op.drop_column("subscriptions", "previous_subscription_id")
    op.drop_column("subscriptions", "started_at")
    op.drop_column("subscriptions", "on_termination_invoice")
