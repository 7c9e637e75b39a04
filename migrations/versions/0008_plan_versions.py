"""plan versions and credit invoices: plans and charges versioned, invoices name their version

- plan_versions: one row per version of a plan (its normalised document, effective from/to).
  Every existing plan gets version 1, effective from the plan's creation, with its document.
- charges: effective_from / effective_to. A charge row is never rewritten: an apply that
  changes it closes it and opens a new one. Existing rows are open, effective from their plan's
  creation. One open charge per (plan, position) replaces the old unique key.
- invoice_subscriptions.plan_version_id: the version a period was priced with. Periods closed
  before this migration get their plan's version 1 (the only version there ever was); the
  finalized-invoice trigger is paused for that one backfill and restored.
- Credit invoices (Lago's ``invoice_type: "credit"``, one per paid wallet top-up): the one
  invoice per customer and day key leaves them out (a partial unique index), a credit fee has
  no subscription and names its wallet transaction (unique: invoiced once).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_versions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("effective_to is null or effective_to > effective_from",
                           name=op.f("ck_plan_versions_range")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"],
                                name=op.f("fk_plan_versions_plan_id_plans"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_versions")),
        sa.UniqueConstraint("plan_id", "version", name="uq_plan_versions_plan_version"),
    )
    op.create_index("uq_plan_versions_open", "plan_versions", ["plan_id"], unique=True,
                    postgresql_where=sa.text("effective_to is null"))
    op.execute(
        "insert into plan_versions (plan_id, version, effective_from, document, digest)"
        " select id, 1, created_at, document, digest from plans"
    )

    op.add_column("charges", sa.Column("effective_from", sa.DateTime(timezone=True),
                                       server_default=sa.text("now()"), nullable=False))
    op.add_column("charges", sa.Column("effective_to", sa.DateTime(timezone=True),
                                       nullable=True))
    op.execute("update charges c set effective_from = p.created_at from plans p"
               " where p.id = c.plan_id")
    op.drop_constraint("uq_charges_plan_id", "charges", type_="unique")
    op.create_index("uq_charges_open_position", "charges", ["plan_id", "position"],
                    unique=True, postgresql_where=sa.text("effective_to is null"))

    op.add_column("invoice_subscriptions",
                  sa.Column("plan_version_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_invoice_subscriptions_plan_version_id_plan_versions"),
                          "invoice_subscriptions", "plan_versions", ["plan_version_id"], ["id"],
                          ondelete="RESTRICT")
    op.execute("alter table invoice_subscriptions disable trigger invoice_subscriptions_final")
    op.execute("update invoice_subscriptions i set plan_version_id = v.id"
               " from subscriptions s join plan_versions v on v.plan_id = s.plan_id"
               " and v.version = 1 where s.id = i.subscription_id")
    op.execute("alter table invoice_subscriptions enable trigger invoice_subscriptions_final")

    # Credit invoices: one per paid top-up, so not one per customer and day; a credit fee has
    # no subscription and names its wallet transaction.
    op.drop_constraint("uq_invoices_customer_day", "invoices", type_="unique")
    op.create_index("uq_invoices_customer_day", "invoices",
                    ["customer_id", "issuing_date", "invoice_type"], unique=True,
                    postgresql_where=sa.text("invoice_type <> 'credit'"))
    op.alter_column("invoice_fees", "subscription_id", nullable=True)
    op.alter_column("invoice_fees", "external_subscription_id", nullable=True)
    op.add_column("invoice_fees",
                  sa.Column("wallet_transaction_id", sa.BigInteger(), nullable=True))
    op.create_unique_constraint(op.f("uq_invoice_fees_wallet_transaction_id"), "invoice_fees",
                                ["wallet_transaction_id"])
    op.create_foreign_key(
        op.f("fk_invoice_fees_wallet_transaction_id_wallet_transactions"), "invoice_fees",
        "wallet_transactions", ["wallet_transaction_id"], ["id"], ondelete="RESTRICT")
    op.drop_constraint(op.f("ck_invoice_fees_item_type"), "invoice_fees", type_="check")
    op.create_check_constraint(
        op.f("ck_invoice_fees_item_type"), "invoice_fees",
        "item_type in ('subscription', 'charge', 'commitment', 'credit')")
    op.create_check_constraint(
        op.f("ck_invoice_fees_credit_fee"), "invoice_fees",
        "(item_type = 'credit') = (wallet_transaction_id is not null)"
        " and (item_type = 'credit' or subscription_id is not null)")


def downgrade() -> None:
    # Credit invoices have no place in the old schema: refused rather than dropped.
    op.execute(
        """
        do $$ begin
          if exists (select 1 from invoices where invoice_type = 'credit') then
            raise exception 'credit invoices exist: downgrade below 0008 would lose them';
          end if;
        end $$
        """
    )
    op.drop_constraint(op.f("ck_invoice_fees_credit_fee"), "invoice_fees", type_="check")
    op.drop_constraint(op.f("ck_invoice_fees_item_type"), "invoice_fees", type_="check")
    op.create_check_constraint(op.f("ck_invoice_fees_item_type"), "invoice_fees",
                               "item_type in ('subscription', 'charge', 'commitment')")
    op.drop_constraint(op.f("fk_invoice_fees_wallet_transaction_id_wallet_transactions"),
                       "invoice_fees", type_="foreignkey")
    op.drop_constraint(op.f("uq_invoice_fees_wallet_transaction_id"), "invoice_fees",
                       type_="unique")
    op.drop_column("invoice_fees", "wallet_transaction_id")
    op.alter_column("invoice_fees", "external_subscription_id", nullable=False)
    op.alter_column("invoice_fees", "subscription_id", nullable=False)
    op.drop_index("uq_invoices_customer_day", table_name="invoices")
    op.create_unique_constraint("uq_invoices_customer_day", "invoices",
                                ["customer_id", "issuing_date", "invoice_type"])
    op.drop_constraint(op.f("fk_invoice_subscriptions_plan_version_id_plan_versions"),
                       "invoice_subscriptions", type_="foreignkey")
    op.drop_column("invoice_subscriptions", "plan_version_id")
    # Closed charges are history the old schema cannot hold: only the current ones stay.
    op.execute("delete from charges where effective_to is not null")
    op.drop_index("uq_charges_open_position", table_name="charges")
    op.create_unique_constraint("uq_charges_plan_id", "charges", ["plan_id", "position"])
    op.drop_column("charges", "effective_to")
    op.drop_column("charges", "effective_from")
    op.drop_index("uq_plan_versions_open", table_name="plan_versions")
    op.drop_table("plan_versions")
