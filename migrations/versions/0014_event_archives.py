"""event_archives: the Parquet files ``tallyflow archive`` moved events into

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

Why: a year of events should not weigh on PostgreSQL once its invoices are final. Each row is
one file, recorded in the transaction that deletes exactly the events it holds, so an event is
either in the table or in exactly one recorded file (docs/scaling.md, "Archiving").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_archives",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("temporary_url", sa.Text, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("first_event_id", sa.BigInteger, nullable=False),
        sa.Column("last_event_id", sa.BigInteger, nullable=False),
        sa.Column("first_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("moved", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.UniqueConstraint("url", name="uq_event_archives_url"),
    )


def downgrade() -> None:
    op.drop_table("event_archives")
