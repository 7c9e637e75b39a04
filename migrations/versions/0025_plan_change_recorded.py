"""when a plan change was recorded

Revision ID: 0025
Revises: 0020
Create Date: 2026-12-07

Why (issue 27, item 7b): a plan change may be backdated (``--at`` in the past, or an apply's
recorded moment). Its rows' periods then end long before the change exists, so the ingest
watermark and the grace period, which count from a period's end, were passed already: the
close finalized the new plan's periods up to the clock at once, and usage for them arriving
after the change was never billed. ``subscriptions.plan_changed_at`` is the moment the change
was recorded, on both rows it touched (the row it ended, the row it started); a period of such
a row is finalized only once the watermark and the grace period have passed that moment too
(``models/invoicing.finalization``, ``tasks/invoicing/close.py``). Rows changed before this
migration keep null: their invoices were closed as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions",
                  sa.Column("plan_changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("subscriptions", "plan_changed_at")
