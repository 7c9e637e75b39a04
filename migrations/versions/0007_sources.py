"""sources: the ledger records the source that read each object; events keep a sub-index

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-29

Existing ledger rows were all read by the fsspec source; their mapping and options were never
recorded, so they get ``{}`` (the defaults: lago, auto format, no options).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ingest_objects",
        sa.Column("source_kind", sa.Text(), server_default=sa.text("'fsspec'"), nullable=False),
    )
    op.add_column(
        "ingest_objects",
        sa.Column(
            "source_spec",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "events", sa.Column("sub_index", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "rejected_rows",
        sa.Column("sub_index", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.drop_constraint("uq_rejected_rows_object_id", "rejected_rows", type_="unique")
    op.create_unique_constraint(
        "uq_rejected_rows_object_id", "rejected_rows", ["object_id", "row_number", "sub_index"]
    )


def downgrade() -> None:
    op.drop_constraint("uq_rejected_rows_object_id", "rejected_rows", type_="unique")
    op.execute("delete from rejected_rows where sub_index <> 0")
    op.create_unique_constraint(
        "uq_rejected_rows_object_id", "rejected_rows", ["object_id", "row_number"]
    )
    op.drop_column("rejected_rows", "sub_index")
    op.drop_column("events", "sub_index")
    op.drop_column("ingest_objects", "source_spec")
    op.drop_column("ingest_objects", "source_kind")
