"""credit notes

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-07

Why (issue 27, items 1 and 8): Lago's credit notes on finalized invoices.

- ``credit_notes``: one per issue, numbered per invoice (``<invoice number>-CN001``), final at
  once; ``idempotency_key`` (unique) makes a retried request find the note it made.
- ``credit_note_items``: the fees credited and by how much (precise and rounded).
- ``credit_note_credits``: what a later invoice consumed of a note's credit, written in that
  invoice's finalizing transaction (Lago's ``credits`` with a ``credit_note``).
- ``subscriptions.on_termination_credit_note``: Lago's choice for a plan paid in advance's
  unused days at a termination or upgrade (``credit``, ``refund``, ``skip``; null: none).
- Triggers (like the invoices', migration 0006): a note is never deleted, and of its columns
  only ``credit_status``, ``refund_status``, ``voided_at``, ``updated_at`` and a decreasing
  ``balance_amount_cents`` may change (and ``html``, once, from empty: the document is written
  in the issuing transaction), nothing once voided; items and credits never change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_GUARDS = """
create function credit_notes_guard() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    raise exception 'credit note % is issued: it cannot be deleted', old.number;
  end if;
  if old.credit_status = 'voided' then
    raise exception 'credit note % is voided: it cannot change', old.number;
  end if;
  if new.balance_amount_cents > old.balance_amount_cents then
    raise exception 'credit note %: its balance can only decrease', old.number;
  end if;
  -- the document is written once, in the issuing transaction, after the row it shows
  if (to_jsonb(new) - 'credit_status' - 'refund_status' - 'voided_at' - 'updated_at'
        - 'balance_amount_cents' - (case when old.html = '' then 'html' else '' end))
     is distinct from
     (to_jsonb(old) - 'credit_status' - 'refund_status' - 'voided_at' - 'updated_at'
        - 'balance_amount_cents' - (case when old.html = '' then 'html' else '' end)) then
    raise exception 'credit note % is issued: only its balance and statuses can change',
      old.number;
  end if;
  return new;
end $$;

create function credit_note_parts_guard() returns trigger
language plpgsql as $$
begin
  raise exception '% are kept as written: they cannot change', tg_table_name;
end $$;
"""

_AMOUNTS = ("credit_amount_cents >= 0 and refund_amount_cents >= 0"
            " and offset_amount_cents >= 0 and balance_amount_cents >= 0"
            " and balance_amount_cents <= credit_amount_cents"
            " and wallet_refund_amount_cents between 0 and refund_amount_cents"
            " and total_amount_cents"
            " = credit_amount_cents + refund_amount_cents + offset_amount_cents")


def _money(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Numeric(), nullable=False) for n in names]


def upgrade() -> None:
    op.add_column("subscriptions",
                  sa.Column("on_termination_credit_note", sa.Text(), nullable=True))
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("sequential_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("issuing_date", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("credit_status", sa.Text(), nullable=False),
        sa.Column("refund_status", sa.Text(), nullable=True),
        *_money("total_amount_cents", "precise_total_amount_cents", "taxes_amount_cents",
                "precise_taxes_amount_cents", "sub_total_excluding_taxes_amount_cents",
                "coupons_adjustment_amount_cents", "precise_coupons_adjustment_amount_cents",
                "taxes_rate", "credit_amount_cents", "refund_amount_cents",
                "offset_amount_cents", "balance_amount_cents"),
        sa.Column("wallet_refund_amount_cents", sa.Numeric(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("applied_taxes", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("credit_status in ('available', 'consumed', 'voided')",
                           name=op.f("ck_credit_notes_credit_status")),
        sa.CheckConstraint("refund_status is null or refund_status in ('pending', 'succeeded',"
                           " 'failed')", name=op.f("ck_credit_notes_refund_status")),
        sa.CheckConstraint("reason in ('duplicated_charge', 'product_unsatisfactory',"
                           " 'order_change', 'order_cancellation', 'fraudulent_charge',"
                           " 'other')", name=op.f("ck_credit_notes_reason")),
        sa.CheckConstraint(_AMOUNTS, name=op.f("ck_credit_notes_amounts")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="RESTRICT",
                                name=op.f("fk_credit_notes_customer_id_customers")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_credit_notes_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_notes_idempotency_key")),
        sa.UniqueConstraint("invoice_id", "sequential_id",
                            name="uq_credit_notes_invoice_sequence"),
        sa.UniqueConstraint("lago_id", name=op.f("uq_credit_notes_lago_id")),
        sa.UniqueConstraint("number", name=op.f("uq_credit_notes_number")),
    )
    op.create_index("ix_credit_notes_customer", "credit_notes", ["customer_id", "id"])
    op.create_table(
        "credit_note_items",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("lago_id", sa.Text(), nullable=False),
        sa.Column("credit_note_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("fee_id", sa.BigInteger(), nullable=False),
        *_money("amount_cents", "precise_amount_cents"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount_cents >= 0 and precise_amount_cents >= 0",
                           name=op.f("ck_credit_note_items_amount")),
        sa.ForeignKeyConstraint(["credit_note_id"], ["credit_notes.id"], ondelete="RESTRICT",
                                name=op.f("fk_credit_note_items_credit_note_id_credit_notes")),
        sa.ForeignKeyConstraint(["fee_id"], ["invoice_fees.id"], ondelete="RESTRICT",
                                name=op.f("fk_credit_note_items_fee_id_invoice_fees")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_items")),
        sa.UniqueConstraint("credit_note_id", "position", name="uq_credit_note_items_position"),
        sa.UniqueConstraint("lago_id", name=op.f("uq_credit_note_items_lago_id")),
    )
    op.create_index("ix_credit_note_items_fee", "credit_note_items", ["fee_id"])
    op.create_table(
        "credit_note_credits",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("credit_note_id", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.Numeric(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_credit_note_credits_amount")),
        sa.ForeignKeyConstraint(
            ["credit_note_id"], ["credit_notes.id"], ondelete="RESTRICT",
            name=op.f("fk_credit_note_credits_credit_note_id_credit_notes")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], ondelete="RESTRICT",
                                name=op.f("fk_credit_note_credits_invoice_id_invoices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_credits")),
        sa.UniqueConstraint("credit_note_id", "invoice_id",
                            name="uq_credit_note_credits_invoice"),
    )
    op.create_index("ix_credit_note_credits_invoice", "credit_note_credits", ["invoice_id"])
    op.execute(_GUARDS)
    op.execute("create trigger credit_notes_kept before update or delete on credit_notes"
               " for each row execute function credit_notes_guard()")
    for table in ("credit_note_items", "credit_note_credits"):
        op.execute(f"create trigger {table}_kept before update or delete on {table}"
                   " for each row execute function credit_note_parts_guard()")


def downgrade() -> None:
    for table in ("credit_note_credits", "credit_note_items", "credit_notes"):
        op.drop_table(table)  # drops its trigger too
    op.execute("drop function credit_note_parts_guard()")
    op.execute("drop function credit_notes_guard()")
    op.drop_column("subscriptions", "on_termination_credit_note")
