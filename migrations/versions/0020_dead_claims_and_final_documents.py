"""dead runs' claims and finalized invoices' documents

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

Why (issue 32):

- ``ingest_objects.claimed_by`` / ``claimed_at``: the ingest run that listed an object to load
  it, and when. A run that died (killed, cancelled, crashed) leaves its objects ``pending``;
  with the claimer known, a claim whose run has ended is told apart from a live one, reclaimed
  by the billing cycle (``tasks/ingest/claims.py``) and shown as the ingest watermark's holder.
  Objects left pending before this migration have no claimer: no live run holds them, so the
  next billing cycle reclaims them (the one-off ingests that froze finalization, among them).
- ``ingest_runs.listed``: whether the run's listing is registered in the ledger; the ingest
  watermark counts only those runs' starts. A run that died before registering what it listed
  (it is then ``crashed`` or ``cancelled``, and finished) claimed the watermark up to its start
  without anything in the ledger to hold it back; a reclaim lists nothing at all. Earlier runs
  keep counting (true).
- Finalized invoices' documents said "Status: draft": they were rendered from the draft just
  before the seal (``tasks/invoice_documents.render_sealed`` now renders the sealed state). The
  number, amounts and dates in them were already final; the status cell was the one thing the
  draft render got wrong, so it is re-rendered here, once, and the PDFs made from those
  documents are removed for the ``invoice-pdfs`` flow to make again from the repaired HTML.
  This is the only change ever made to a finalized invoice's documents: the immutability
  triggers (migration 0006) are paused for these two statements only and restored. The
  downgrade keeps the repaired documents (the draft status was never true).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

DRAFT_CELL = "<tr><td>Status</td><td>draft</td></tr>"
FINAL_CELL = "<tr><td>Status</td><td>finalized</td></tr>"


def upgrade() -> None:
    op.add_column("ingest_objects", sa.Column("claimed_by", sa.BigInteger(), nullable=True))
    op.add_column("ingest_objects",
                  sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(op.f("fk_ingest_objects_claimed_by_ingest_runs"), "ingest_objects",
                          "ingest_runs", ["claimed_by"], ["id"], ondelete="SET NULL")
    op.add_column("ingest_runs", sa.Column("listed", sa.Boolean(), nullable=False,
                                           server_default=sa.text("true")))

    bind = op.get_bind()
    op.execute("alter table invoices disable trigger invoices_final")
    repaired = bind.execute(
        sa.text("update invoices set html = replace(html, :draft, :final)"
                " where status = 'finalized' and strpos(html, :draft) > 0 returning id"),
        {"draft": DRAFT_CELL, "final": FINAL_CELL},
    ).scalars().all()
    op.execute("alter table invoices enable trigger invoices_final")
    if repaired:
        op.execute("alter table invoice_pdfs disable trigger invoice_pdfs_final")
        bind.execute(sa.text("delete from invoice_pdfs"
                             " where invoice_id = any(cast(:ids as bigint[]))"),
                     {"ids": list(repaired)})
        op.execute("alter table invoice_pdfs enable trigger invoice_pdfs_final")


def downgrade() -> None:
    op.drop_column("ingest_runs", "listed")
    op.drop_constraint(op.f("fk_ingest_objects_claimed_by_ingest_runs"), "ingest_objects",
                       type_="foreignkey")
    op.drop_column("ingest_objects", "claimed_at")
    op.drop_column("ingest_objects", "claimed_by")
