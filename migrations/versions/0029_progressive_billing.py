"""progressive billing and lifetime usage (issue 29, item 2; docs/architecture.md §20)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07

- ``invoices.invoice_type`` gains ``progressive_billing`` (Lago's): an invoice issued when a
  subscription's lifetime usage crosses a usage threshold, for the period's usage so far.
- ``invoices.progressive_billing_credit_amount_cents`` (Lago's field): what progressive
  invoices of the invoice's periods already billed, deducted before taxes.
- ``progressive_invoices``: a progressive invoice's subscription period and crossing, kept out
  of ``invoice_subscriptions`` so that the period stays open (not closed, its plan version not
  frozen, its hourly wallet deductions going on).
- ``lifetime_usages``: the historical usage a person sets (Lago's
  ``historical_usage_amount_cents``), per external subscription id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_TYPES = "'subscription', 'credit', 'pay_in_advance', 'advance_charges', 'one_off'"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_invoices_invoice_type"), "invoices", type_="check")
    op.create_check_constraint(op.f("ck_invoices_invoice_type"), "invoices",
                               f"invoice_type in ({_TYPES}, 'progressive_billing')")
    op.add_column("invoices", sa.Column("progressive_billing_credit_amount_cents", sa.Numeric(),
                                        server_default=sa.text("0"), nullable=False))
    op.create_table(
        "progressive_invoices",
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("external_subscription_id", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("lifetime_usage_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("thresholds", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prepaid_usage_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_progressive_invoices_invoice_id_invoices")),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["subscriptions.id"], ondelete="RESTRICT",
            name=op.f("fk_progressive_invoices_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_progressive_invoices")),
        sa.UniqueConstraint("subscription_id", "period_start", "sequence",
                            name="uq_progressive_invoices_crossing"),
    )
    op.create_table(
        "lifetime_usages",
        sa.Column("external_subscription_id", sa.Text(), nullable=False),
        sa.Column("historical_usage_amount_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("historical_usage_amount_cents >= 0",
                           name=op.f("ck_lifetime_usages_historical_not_negative")),
        sa.PrimaryKeyConstraint("external_subscription_id", name=op.f("pk_lifetime_usages")),
    )


def downgrade() -> None:
    # Progressive invoices have no place in the old schema: refused rather than dropped.
    op.execute(
        """
        do $$ begin
          if exists (select 1 from invoices where invoice_type = 'progressive_billing') then
            raise exception 'progressive invoices exist: downgrade below 0029 would lose them';
          end if;
        end $$
        """
    )
    op.drop_table("lifetime_usages")
    op.drop_table("progressive_invoices")
    op.drop_column("invoices", "progressive_billing_credit_amount_cents")
    op.drop_constraint(op.f("ck_invoices_invoice_type"), "invoices", type_="check")
    op.create_check_constraint(op.f("ck_invoices_invoice_type"), "invoices",
                               f"invoice_type in ({_TYPES})")
