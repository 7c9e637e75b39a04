"""lifecycle: what a subscription's termination does about its last invoice

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29

``terminated_at`` and ``ending_at`` already exist (0001); a termination (the command, or the
catalog's ``ending_at``) now bills the partial period at once unless
``on_termination_invoice`` is ``skip`` (Lago's parameter of the terminate call).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("on_termination_invoice", sa.Text(), server_default=sa.text("'generate'"),
                  nullable=False),
    )


def downgrade() -> None:
    op.drop_column("subscriptions", "on_termination_invoice")
