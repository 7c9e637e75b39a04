"""API objects reserved before they are written, and the API's mark: the ingest watermark
covers `tallyflow api`'s objects, a crash between writing and registering one included
(docs/architecture.md §23)

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_writes",
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column(
            "begun_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_api_writes")),
    )
    op.create_table(
        "api_mark",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_api_mark_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_mark")),
    )


def downgrade() -> None:
    op.drop_table("api_mark")
    op.drop_table("api_writes")
