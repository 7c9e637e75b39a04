"""usage_states.day_totals: per-day value totals of recurring sums, for prorated charges

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

Why: a prorated charge weighs each event by the share of the period left from its local day
(docs/architecture.md §4, aggregation). The weight depends only on the event's day and the
period, so folding the values per local day keeps the hourly path incremental (§3, invariant
6): pricing weighs at most one entry per day instead of rescanning events. States folded
before this column existed have no day totals; ``tallyflow usage rebuild`` fills them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_states", sa.Column("day_totals", JSONB))


def downgrade() -> None:
    op.drop_column("usage_states", "day_totals")
