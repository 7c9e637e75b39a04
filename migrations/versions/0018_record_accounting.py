"""Every record accounted for: record counts per object and run; unbillable counts in state

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

Why (docs/data-quality.md, "Every record accounted for" and "Unbillable events"): a record a
mapping turned into no event left no trace, and ``rows`` counted events plus rejects, so input
could not be reconciled with output. ``ingest_objects`` and ``ingest_runs`` now count records
read, emitted, and empty (``no_usage``) next to ``rejected``, and the events the emitted ones
gave. ``usage_states`` keeps, per state key and folded incrementally (docs/architecture.md §3,
invariant 6), how many events carried a non-numeric value in the aggregated field
(``not_a_number``) with a few of their transaction ids, and a few transaction ids of its
events, so rating can name samples of events that no charge filter prices (``unpriced``).
Objects and states from before this migration count 0 until they are read or folded again
(``tallyflow usage rebuild`` refolds states).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_COUNTS = ("records", "records_emitted", "records_empty", "events")


def upgrade() -> None:
    for table in ("ingest_objects", "ingest_runs"):
        for name in _COUNTS:
            op.add_column(table, sa.Column(name, sa.BigInteger, nullable=False,
                                           server_default=sa.text("0")))
    op.add_column("usage_states", sa.Column("not_a_number_count", sa.BigInteger,
                                            nullable=False, server_default=sa.text("0")))
    for name in ("not_a_number_ids", "sample_ids"):
        op.add_column("usage_states", sa.Column(name, ARRAY(sa.Text), nullable=False,
                                                server_default=sa.text("'{}'::text[]")))


def downgrade() -> None:
    for name in ("sample_ids", "not_a_number_ids", "not_a_number_count"):
        op.drop_column("usage_states", name)
    for table in ("ingest_runs", "ingest_objects"):
        for name in reversed(_COUNTS):
            op.drop_column(table, name)
