"""coupons, applied coupons and their credits

Revision ID: 0023
Revises: 0020
Create Date: 2026-12-07

Why (issue 27, item 4): Lago's coupons (``fixed_amount``/``percentage``, ``once``/
``recurring``/``forever``, limited to plans or billable metrics), the coupons applied to
customers, and the credits they give on finalized invoices (docs/architecture.md §15).

- ``coupons``: a catalog object (document and digest, like the other kinds).
- ``applied_coupons``: a coupon applied to a customer, with the state the close moves on
  (``frequency_duration_remaining``, ``status``).
- ``coupon_credits``: one per (invoice, applied coupon), written in the transaction that
  finalizes the invoice; like the invoice's fees, never changed once it is finalized (the
  same guard as migration 0006's).
- ``invoice_fees.precise_coupons_amount_cents``: each fee's share of the coupons, which its
  taxes are computed after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"),
                      nullable=False) for name in ("created_at", "updated_at")]


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("coupon_type", sa.Text(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=True),
        sa.Column("amount_currency", sa.Text(), nullable=True),
        sa.Column("percentage_rate", sa.Numeric(), nullable=True),
        sa.Column("frequency", sa.Text(), nullable=False),
        sa.Column("frequency_duration", sa.Integer(), nullable=True),
        sa.Column("reusable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("expiration", sa.Text(), nullable=False),
        sa.Column("expiration_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("plan_codes", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"),
                  nullable=False),
        sa.Column("billable_metric_codes", postgresql.ARRAY(sa.Text()),
                  server_default=sa.text("'{}'"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint("coupon_type in ('fixed_amount', 'percentage')",
                           name=op.f("ck_coupons_coupon_type")),
        sa.CheckConstraint("frequency in ('once', 'recurring', 'forever')",
                           name=op.f("ck_coupons_frequency")),
        sa.CheckConstraint("status in ('active', 'terminated')", name=op.f("ck_coupons_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("code", name=op.f("uq_coupons_code")),
    )
    op.create_table(
        "applied_coupons",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("coupon_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=True),
        sa.Column("amount_currency", sa.Text(), nullable=True),
        sa.Column("percentage_rate", sa.Numeric(), nullable=True),
        sa.Column("frequency", sa.Text(), nullable=False),
        sa.Column("frequency_duration", sa.Integer(), nullable=True),
        sa.Column("frequency_duration_remaining", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("digest", sa.Text(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("frequency in ('once', 'recurring', 'forever')",
                           name=op.f("ck_applied_coupons_frequency")),
        sa.CheckConstraint("status in ('active', 'terminated')",
                           name=op.f("ck_applied_coupons_status")),
        sa.ForeignKeyConstraint(["coupon_id"], ["coupons.id"], ondelete="RESTRICT",
                                name=op.f("fk_applied_coupons_coupon_id_coupons")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="RESTRICT",
                                name=op.f("fk_applied_coupons_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applied_coupons")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_applied_coupons_lago_id")),
    )
    op.create_index("ix_applied_coupons_customer", "applied_coupons", ["customer_id"])
    op.create_table(
        "coupon_credits",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("applied_coupon_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("precise_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("amount_currency", sa.Text(), nullable=False),
        sa.Column("before_taxes", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_coupon_credits_invoice_id_invoices")),
        sa.ForeignKeyConstraint(["applied_coupon_id"], ["applied_coupons.id"],
                                ondelete="RESTRICT",
                                name=op.f("fk_coupon_credits_applied_coupon_id_applied_coupons")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_credits")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_coupon_credits_lago_id")),
        sa.UniqueConstraint("invoice_id", "applied_coupon_id", name="uq_coupon_credits_invoice"),
    )
    op.create_index("ix_coupon_credits_applied_coupon", "coupon_credits", ["applied_coupon_id"])
    # a finalized invoice's credits never change (migration 0006's guard of its parts)
    op.execute("create trigger coupon_credits_final before insert or update or delete on"
               " coupon_credits for each row execute function invoice_parts_guard()")
    # a column of a finalized invoice's fees: its triggers refuse the update, so add it
    # with a default (no row is rewritten)
    op.add_column("invoice_fees", sa.Column("precise_coupons_amount_cents", sa.Numeric(),
                                            server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("invoice_fees", "precise_coupons_amount_cents")
    op.execute("drop trigger coupon_credits_final on coupon_credits")
    op.drop_index("ix_coupon_credits_applied_coupon", table_name="coupon_credits")
    op.drop_table("coupon_credits")
    op.drop_index("ix_applied_coupons_customer", table_name="applied_coupons")
    op.drop_table("applied_coupons")
    op.drop_table("coupons")
