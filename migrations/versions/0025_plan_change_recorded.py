"""when a plan change was recorded; prepaid credits split into granted and purchased

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

Why (item 7c): Lago's invoice splits ``prepaid_credit_amount_cents`` into
``prepaid_granted_credit_amount_cents`` and ``prepaid_purchased_credit_amount_cents``
(``Credits::AppliedPrepaidCreditsService``: the granted credits are consumed first), each set
only when positive, else null. The wallet ledger already records the granted credits of every
movement; the close writes the split with the prepaid amount (``tasks/invoicing/prepaid.py``).
Invoices finalized before this migration keep null (Lago's backfill job fills them from its
consumption records; Tallyflow's ledger could too, but finalized invoices never change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions",
                  sa.Column("plan_changed_at", sa.DateTime(timezone=True), nullable=True))
    for name in ("prepaid_granted_credit_amount_cents", "prepaid_purchased_credit_amount_cents"):
        op.add_column("invoices", sa.Column(name, sa.Numeric(), nullable=True))


def downgrade() -> None:
    for name in ("prepaid_purchased_credit_amount_cents", "prepaid_granted_credit_amount_cents"):
        op.drop_column("invoices", name)
    op.drop_column("subscriptions", "plan_changed_at")
