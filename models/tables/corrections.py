"""Corrections tables: credit notes, their items and what later invoices consumed of them.

A credit note is issued once, final at once (Lago's ``finalized``) and never rewritten: only its
balance (consumed by later invoices, voided), its credit and refund statuses and ``voided_at``
may change, and its items and consumptions never do (triggers, migration 0022).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, _timestamps, metadata

credit_notes = Table(
    "credit_notes",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    # The caller's key (or a fresh one): a retried request finds the note it already made.
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    # Lago's sequence is per invoice: number = <invoice number>-CN<sequential_id, 3 digits>
    Column("sequential_id", Integer, nullable=False),
    Column("number", Text, nullable=False, unique=True),
    Column("issuing_date", Date, nullable=False),
    Column("reason", Text, nullable=False),
    Column("description", Text),
    Column("currency", Text, nullable=False),
    Column("credit_status", Text, nullable=False),
    Column("refund_status", Text),
    Column("total_amount_cents", Numeric, nullable=False),
    Column("precise_total_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("precise_taxes_amount_cents", Numeric, nullable=False),
    Column("sub_total_excluding_taxes_amount_cents", Numeric, nullable=False),
    Column("coupons_adjustment_amount_cents", Numeric, nullable=False),
    Column("precise_coupons_adjustment_amount_cents", Numeric, nullable=False),
    Column("taxes_rate", Numeric, nullable=False),
    Column("credit_amount_cents", Numeric, nullable=False),
    Column("refund_amount_cents", Numeric, nullable=False),
    Column("offset_amount_cents", Numeric, nullable=False),
    # what is left of the credit for later invoices (credit_amount_cents at issue)
    Column("balance_amount_cents", Numeric, nullable=False),
    # the part of the refund that went back to the wallets that paid the invoice
    Column("wallet_refund_amount_cents", Numeric, nullable=False,
           server_default=text("0")),
    Column("applied_taxes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("html", Text, nullable=False),
    Column("voided_at", DateTime(timezone=True)),
    *_timestamps(),
    UniqueConstraint("invoice_id", "sequential_id", name="uq_credit_notes_invoice_sequence"),
    CheckConstraint("credit_status in ('available', 'consumed', 'voided')",
                    name="credit_status"),
    CheckConstraint("refund_status is null or refund_status in ('pending', 'succeeded',"
                    " 'failed')", name="refund_status"),
    CheckConstraint("reason in ('duplicated_charge', 'product_unsatisfactory', 'order_change',"
                    " 'order_cancellation', 'fraudulent_charge', 'other')", name="reason"),
    CheckConstraint("credit_amount_cents >= 0 and refund_amount_cents >= 0"
                    " and offset_amount_cents >= 0 and balance_amount_cents >= 0"
                    " and balance_amount_cents <= credit_amount_cents"
                    " and wallet_refund_amount_cents between 0 and refund_amount_cents"
                    " and total_amount_cents"
                    " = credit_amount_cents + refund_amount_cents + offset_amount_cents",
                    name="amounts"),
    Index("ix_credit_notes_customer", "customer_id", "id"),
)


credit_note_items = Table(
    "credit_note_items",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("credit_note_id", BigInteger, ForeignKey("credit_notes.id", ondelete="RESTRICT"),
           nullable=False),
    Column("position", Integer, nullable=False),
    Column("fee_id", BigInteger, ForeignKey("invoice_fees.id", ondelete="RESTRICT"),
           nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("credit_note_id", "position", name="uq_credit_note_items_position"),
    CheckConstraint("amount_cents >= 0 and precise_amount_cents >= 0", name="amount"),
    Index("ix_credit_note_items_fee", "fee_id"),
)


# Lago's ``credits`` of a credit note: what one invoice consumed of it, at its finalization.
credit_note_credits = Table(
    "credit_note_credits",
    metadata,
    _pk(),
    Column("credit_note_id", BigInteger, ForeignKey("credit_notes.id", ondelete="RESTRICT"),
           nullable=False),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("credit_note_id", "invoice_id", name="uq_credit_note_credits_invoice"),
    CheckConstraint("amount_cents > 0", name="amount"),
    Index("ix_credit_note_credits_invoice", "invoice_id"),
)
