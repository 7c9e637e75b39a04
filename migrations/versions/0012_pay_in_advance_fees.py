"""pay-in-advance charges: one fee per (charge, filter, event), their invoices

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

A charge with ``pay_in_advance`` bills each event as it is rated (Lago's per-event fee); the
fee rows are keyed by (charge, filter bucket, event), so a rerun, a retry or a crash never
bills an event twice (docs/architecture.md §3, invariant 2; docs/invoices.md, "Charges paid in
advance"). Their invoices are ``pay_in_advance`` (one per subscription and billing-cycle hour)
and ``advance_charges`` (the paid fees of ``invoiceable: false`` charges regrouped at period
end); the one-invoice-per-customer-and-day key now covers ``subscription`` invoices only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("charges", sa.Column("regroup_paid_fees", sa.Text(), nullable=True))
    op.drop_index("uq_invoices_customer_day", table_name="invoices")
    op.create_index("uq_invoices_customer_day", "invoices",
                    ["customer_id", "issuing_date", "invoice_type"], unique=True,
                    postgresql_where=sa.text("invoice_type = 'subscription'"))
    op.create_check_constraint(
        op.f("ck_invoices_invoice_type"), "invoices",
        "invoice_type in ('subscription', 'credit', 'pay_in_advance', 'advance_charges')")
    op.add_column("invoice_fees", sa.Column("event_transaction_id", sa.Text(), nullable=True))
    op.create_table(
        "advance_fees",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("charge_id", sa.BigInteger(), nullable=False),
        sa.Column("charge_position", sa.Integer(), nullable=False),
        sa.Column("charge_slot", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("grouped_by", sa.dialects.postgresql.JSONB(), nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("billing_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("units", sa.Numeric(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("precise_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("taxes_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("taxes_precise_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("invoiceable", sa.Boolean(), nullable=False),
        sa.Column("regroup", sa.Boolean(), nullable=False),
        sa.Column("prepaid_cents", sa.Numeric(), nullable=False, server_default=sa.text("0")),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.ForeignKeyConstraint(["charge_id"], ["charges.id"],
                                name=op.f("fk_advance_fees_charge_id_charges"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"],
                                name=op.f("fk_advance_fees_subscription_id_subscriptions"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_advance_fees_customer_id_customers"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"],
                                name=op.f("fk_advance_fees_invoice_id_invoices"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advance_fees")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_advance_fees_lago_id")),
        sa.UniqueConstraint("charge_id", "bucket", "event_id",
                            name="uq_advance_fees_charge_event"),
    )
    op.create_index("ix_advance_fees_period", "advance_fees",
                    ["subscription_id", "period_start", "charge_slot", "event_id"])
    op.create_index("ix_advance_fees_regroup", "advance_fees", ["customer_id"],
                    postgresql_where=sa.text("regroup and invoice_id is null"))


def downgrade() -> None:
    op.drop_index("ix_advance_fees_regroup", table_name="advance_fees")
    op.drop_index("ix_advance_fees_period", table_name="advance_fees")
    op.drop_table("advance_fees")
    op.drop_column("invoice_fees", "event_transaction_id")
    op.drop_constraint(op.f("ck_invoices_invoice_type"), "invoices", type_="check")
    op.drop_index("uq_invoices_customer_day", table_name="invoices")
    op.create_index("uq_invoices_customer_day", "invoices",
                    ["customer_id", "issuing_date", "invoice_type"], unique=True,
                    postgresql_where=sa.text("invoice_type <> 'credit'"))
    op.drop_column("charges", "regroup_paid_fees")
