"""events: the dedup key compares byte-wise ("C" collation)

Revision ID: 0011
Revises: 0007
Create Date: 2026-11-29

Why (docs/scaling.md has the measurements): the events' primary key is the dedup key, two text
columns, and every insert compares keys in the unique index. With the database's default
collation each comparison goes through the locale; the keys are identifiers, so they compare
byte-wise, which merged 1.5-1.7x faster in ``benchmarks/bench_partitions.py``. Equality (what
dedup and every join on these columns use) is unchanged.

Hash partitioning by subscription was designed and measured too but is not built here: a
partitioned table's attached primary-key indexes break ``pg_restore --clean`` (the restore of
``tallyflow db restore``), see docs/scaling.md.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        'alter table events alter column external_subscription_id type text collate "C",'
        ' alter column transaction_id type text collate "C"'
    )


def downgrade() -> None:
    op.execute(
        "alter table events alter column external_subscription_id type text collate \"default\","
        ' alter column transaction_id type text collate "default"'
    )
