"""invoices: tax objects, invoices with their fees and periods, finalized ones immutable

- taxes: Lago tax objects of the catalog (code, name, rate in percent, organization default).
- billing_entities: Lago's issuer objects (name, address, tax id, number prefix, taxes).
- invoices / invoice_fees / invoice_subscriptions: one invoice per customer and billing day;
  a subscription period is on at most one invoice. Triggers: once an invoice is finalized,
  it and its fees and periods can be neither updated nor deleted (only ``payment_status``,
  ``emitted_at`` and ``updated_at`` may still change), and no fee or period can be added to it.
- invoice_pdfs: the PDF made from a finalized invoice's HTML, written once (trigger).
- wallet_transactions: source ``invoice``: the deduction made at finalization (its idempotency
  key names the invoice: ``invoice:<invoice id>:<wallet id>``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_INVOICE_GUARD = """
create function invoices_guard() returns trigger
language plpgsql as $$
begin
  if old.status <> 'finalized' then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  if tg_op = 'DELETE' then
    raise exception 'invoice % is finalized: it cannot be deleted', old.number
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  if (to_jsonb(new) - 'payment_status' - 'updated_at' - 'emitted_at') is distinct from
     (to_jsonb(old) - 'payment_status' - 'updated_at' - 'emitted_at') then
    raise exception 'invoice % is finalized: only its payment status can change', old.number
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  return new;
end
$$
"""

_PART_GUARD = """
create function invoice_parts_guard() returns trigger
language plpgsql as $$
declare
  target bigint;
begin
  target := case when tg_op = 'INSERT' then new.invoice_id else old.invoice_id end;
  if exists (select 1 from invoices where id = target and status = 'finalized')
     or (tg_op = 'UPDATE' and exists (select 1 from invoices
                                       where id = new.invoice_id and status = 'finalized')) then
    raise exception '% of finalized invoice % cannot change', tg_table_name, target
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$
"""

_PDF_GUARD = """
create function invoice_pdfs_guard() returns trigger
language plpgsql as $$
begin
  raise exception 'the PDF of invoice % is kept as made: it cannot change', old.invoice_id
    using errcode = 'restrict_violation';
end
$$
"""


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
    ]


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def upgrade() -> None:
    op.create_table(
        "taxes",
        _id(),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("rate", sa.Numeric(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("applied_to_organization", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_taxes")),
        sa.UniqueConstraint("code", name=op.f("uq_taxes_code")),
    )
    op.create_table(
        "billing_entities",
        _id(),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_entities")),
        sa.UniqueConstraint("code", name=op.f("uq_billing_entities_code")),
    )
    op.create_table(
        "invoices",
        _id(),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("invoice_type", sa.Text(), server_default=sa.text("'subscription'"),
                  nullable=False),
        sa.Column("issuing_date", sa.Date(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'draft'"), nullable=False),
        sa.Column("payment_status", sa.Text(), server_default=sa.text("'pending'"),
                  nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("sequential_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.Text(), nullable=True),
        sa.Column("fees_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("taxes_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("coupons_amount_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("credit_notes_amount_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("prepaid_credit_amount_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("total_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("applied_taxes", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("customer", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("billing_entity", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("finalize_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("net_payment_term", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("payment_due_date", sa.Date(), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("status in ('draft', 'finalized')", name=op.f("ck_invoices_status")),
        sa.CheckConstraint("payment_status in ('pending', 'succeeded', 'failed')",
                           name=op.f("ck_invoices_payment_status")),
        sa.CheckConstraint(
            "status = 'draft' or (sequential_id is not null and number is not null)",
            name=op.f("ck_invoices_numbered"),
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoices_customer_id_customers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_invoices_lago_id")),
        sa.UniqueConstraint("number", name=op.f("uq_invoices_number")),
        sa.UniqueConstraint("customer_id", "issuing_date", "invoice_type",
                            name="uq_invoices_customer_day"),
        sa.UniqueConstraint("customer_id", "sequential_id",
                            name="uq_invoices_customer_sequence"),
    )
    op.create_index("ix_invoices_status", "invoices", ["status"])
    op.create_table(
        "invoice_subscriptions",
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoice_subscriptions_subscription_id_subscriptions")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoice_subscriptions_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("subscription_id", "period_start",
                                name=op.f("pk_invoice_subscriptions")),
    )
    op.create_index("ix_invoice_subscriptions_invoice", "invoice_subscriptions", ["invoice_id"])
    op.create_table(
        "invoice_fees",
        _id(),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("external_subscription_id", sa.Text(), nullable=False),
        sa.Column("item_type", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("invoice_display_name", sa.Text(), nullable=True),
        sa.Column("filter_invoice_display_name", sa.Text(), nullable=True),
        sa.Column("grouped_by", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("charge_id", sa.BigInteger(), nullable=True),
        sa.Column("true_up", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("units", sa.Numeric(), nullable=False),
        sa.Column("events_count", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("precise_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("taxes_rate", sa.Numeric(), nullable=False),
        sa.Column("taxes_precise_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("taxes_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("total_amount_cents", sa.Numeric(), nullable=False),
        sa.Column("applied_taxes", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("from_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("item_type in ('subscription', 'charge', 'commitment')",
                           name=op.f("ck_invoice_fees_item_type")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoice_fees_invoice_id_invoices")),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoice_fees_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_fees")),
        sa.UniqueConstraint("lago_id", name=op.f("uq_invoice_fees_lago_id")),
        sa.UniqueConstraint("invoice_id", "position", name="uq_invoice_fees_position"),
    )
    op.create_table(
        "invoice_pdfs",
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_invoice_pdfs_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_invoice_pdfs")),
    )
    op.execute(_PDF_GUARD)
    op.execute("create trigger invoice_pdfs_final before update or delete on invoice_pdfs"
               " for each row execute function invoice_pdfs_guard()")
    op.execute(_INVOICE_GUARD)
    op.execute("create trigger invoices_final before update or delete on invoices"
               " for each row execute function invoices_guard()")
    op.execute(_PART_GUARD)
    for table in ("invoice_fees", "invoice_subscriptions"):
        op.execute(f"create trigger {table}_final before insert or update or delete on {table}"
                   " for each row execute function invoice_parts_guard()")
    op.drop_constraint(op.f("ck_wallet_transactions_source"), "wallet_transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_wallet_transactions_source"), "wallet_transactions",
        "source in ('manual', 'interval', 'threshold', 'usage', 'expiration', 'initial',"
        " 'invoice')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_wallet_transactions_source"), "wallet_transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_wallet_transactions_source"), "wallet_transactions",
        "source in ('manual', 'interval', 'threshold', 'usage', 'expiration', 'initial')",
    )
    for table in ("invoice_fees", "invoice_subscriptions"):
        op.execute(f"drop trigger {table}_final on {table}")
    op.execute("drop function invoice_parts_guard()")
    op.execute("drop trigger invoices_final on invoices")
    op.execute("drop function invoices_guard()")
    op.execute("drop trigger invoice_pdfs_final on invoice_pdfs")
    op.execute("drop function invoice_pdfs_guard()")
    op.drop_table("invoice_pdfs")
    op.drop_table("invoice_fees")
    op.drop_index("ix_invoice_subscriptions_invoice", table_name="invoice_subscriptions")
    op.drop_table("invoice_subscriptions")
    op.drop_index("ix_invoices_status", table_name="invoices")
    op.drop_table("invoices")
    op.drop_table("billing_entities")
    op.drop_table("taxes")
