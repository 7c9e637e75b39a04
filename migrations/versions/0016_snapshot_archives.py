"""snapshot_archives: the Parquet files ``tallyflow archive`` moved whole months of snapshots into

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29

Why: with ``usage_snapshots`` in monthly partitions (0015), a finalized month leaves the
table by replacing its partition with the few snapshots that are still named (by
``usage_amounts`` and ``wallet_usage_positions``), instead of deleting tens of millions of rows.
Each row here is one file, recorded in the transaction that swaps the partition, so a snapshot
is either in the table or in exactly one recorded file (docs/scaling.md §2).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_archives",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("month", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("temporary_url", sa.Text, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("kept", sa.BigInteger, nullable=False),
        sa.Column("first_snapshot_id", sa.BigInteger, nullable=False),
        sa.Column("last_snapshot_id", sa.BigInteger, nullable=False),
        sa.Column("moved", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.UniqueConstraint("url", name="uq_snapshot_archives_url"),
    )


def downgrade() -> None:
    op.drop_table("snapshot_archives")
