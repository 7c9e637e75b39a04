"""add-ons and one-off invoices

Revision ID: 0024
Revises: 0020
Create Date: 2026-12-07

Why (issue 27, item 5; docs/architecture.md §16):

- ``add_ons``: Lago's add-on catalog object (``{"add_on": {...}}``): a code, a name, a default
  unit price (``amount_cents`` in ``amount_currency``), its own tax codes (in the document).
  Deleting one is a soft delete (``deleted_at``), as Lago's ``discard``: the fees that named it
  keep their reference.
- ``invoices.invoice_type`` gains ``one_off`` (``POST /invoices``): an invoice of add-on fees,
  finalized and paid from the wallets at once. ``idempotency_key`` (the ``Idempotency-Key``
  header, ``invoices create --key``) is unique, so a retried posting finds the invoice it made
  instead of making a second one; ``request_digest`` is what the key was first posted with, so
  the same key with another request is refused rather than answered with the wrong invoice.
- ``invoice_fees.item_type`` gains ``add_on``: such a fee names its add-on (``add_on_id``), no
  subscription, and keeps the ``description`` and ``unit_amount_cents`` Lago's fee shows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "add_ons",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("amount_currency", sa.Text(), nullable=False),
        sa.Column("invoice_display_name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_add_ons")),
        sa.UniqueConstraint("code", name=op.f("uq_add_ons_code")),
    )
    op.drop_constraint(op.f("ck_invoices_invoice_type"), "invoices", type_="check")
    op.create_check_constraint(
        op.f("ck_invoices_invoice_type"), "invoices",
        "invoice_type in ('subscription', 'credit', 'pay_in_advance', 'advance_charges',"
        " 'one_off')")
    op.add_column("invoices", sa.Column("idempotency_key", sa.Text(), nullable=True))
    op.add_column("invoices", sa.Column("request_digest", sa.Text(), nullable=True))
    op.create_unique_constraint(op.f("uq_invoices_idempotency_key"), "invoices",
                                ["idempotency_key"])
    op.add_column("invoice_fees", sa.Column("add_on_id", sa.BigInteger(), nullable=True))
    op.add_column("invoice_fees", sa.Column("description", sa.Text(), nullable=True))
    op.add_column("invoice_fees", sa.Column("unit_amount_cents", sa.Numeric(), nullable=True))
    op.create_foreign_key(op.f("fk_invoice_fees_add_on_id_add_ons"), "invoice_fees", "add_ons",
                          ["add_on_id"], ["id"], ondelete="RESTRICT")
    op.drop_constraint(op.f("ck_invoice_fees_credit_fee"), "invoice_fees", type_="check")
    op.drop_constraint(op.f("ck_invoice_fees_item_type"), "invoice_fees", type_="check")
    op.create_check_constraint(
        op.f("ck_invoice_fees_item_type"), "invoice_fees",
        "item_type in ('subscription', 'charge', 'commitment', 'credit', 'add_on')")
    op.create_check_constraint(
        op.f("ck_invoice_fees_credit_fee"), "invoice_fees",
        "(item_type = 'credit') = (wallet_transaction_id is not null)"
        " and (item_type in ('credit', 'add_on') or subscription_id is not null)")
    op.create_check_constraint(
        op.f("ck_invoice_fees_add_on_fee"), "invoice_fees",
        "(item_type = 'add_on') = (add_on_id is not null)")


def downgrade() -> None:
    # One-off invoices have no place in the old schema: refused rather than dropped.
    op.execute(
        """
        do $$ begin
          if exists (select 1 from invoices where invoice_type = 'one_off') then
            raise exception 'one-off invoices exist: downgrade below 0024 would lose them';
          end if;
        end $$
        """
    )
    op.drop_constraint(op.f("ck_invoice_fees_add_on_fee"), "invoice_fees", type_="check")
    op.drop_constraint(op.f("ck_invoice_fees_credit_fee"), "invoice_fees", type_="check")
    op.drop_constraint(op.f("ck_invoice_fees_item_type"), "invoice_fees", type_="check")
    op.create_check_constraint(
        op.f("ck_invoice_fees_item_type"), "invoice_fees",
        "item_type in ('subscription', 'charge', 'commitment', 'credit')")
    op.create_check_constraint(
        op.f("ck_invoice_fees_credit_fee"), "invoice_fees",
        "(item_type = 'credit') = (wallet_transaction_id is not null)"
        " and (item_type = 'credit' or subscription_id is not null)")
    op.drop_constraint(op.f("fk_invoice_fees_add_on_id_add_ons"), "invoice_fees",
                       type_="foreignkey")
    op.drop_column("invoice_fees", "unit_amount_cents")
    op.drop_column("invoice_fees", "description")
    op.drop_column("invoice_fees", "add_on_id")
    op.drop_constraint(op.f("uq_invoices_idempotency_key"), "invoices", type_="unique")
    op.drop_column("invoices", "request_digest")
    op.drop_column("invoices", "idempotency_key")
    op.drop_constraint(op.f("ck_invoices_invoice_type"), "invoices", type_="check")
    op.create_check_constraint(
        op.f("ck_invoices_invoice_type"), "invoices",
        "invoice_type in ('subscription', 'credit', 'pay_in_advance', 'advance_charges')")
    op.drop_table("add_ons")
