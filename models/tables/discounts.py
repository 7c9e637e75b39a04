"""Coupons, the coupons applied to customers, and their credits on invoices (migration 0023).

A credit is written once per (invoice, applied coupon), in the transaction that finalizes the
invoice, with the applied coupon's new state (docs/architecture.md §15): a rerun or a crash
before the commit leaves neither, so a coupon is consumed exactly once.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from tallyflow.models.tables.base import _document, _pk, _timestamps, metadata

coupons = Table(
    "coupons",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("coupon_type", Text, nullable=False),
    Column("amount_cents", Numeric),
    Column("amount_currency", Text),
    Column("percentage_rate", Numeric),
    Column("frequency", Text, nullable=False),
    Column("frequency_duration", Integer),
    Column("reusable", Boolean, nullable=False, server_default=text("true")),
    Column("expiration", Text, nullable=False),
    Column("expiration_at", DateTime(timezone=True)),
    # Lago's coupon_targets: the plans or the metrics the coupon is limited to (one kind).
    Column("plan_codes", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("billable_metric_codes", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("terminated_at", DateTime(timezone=True)),
    *_document(),
    *_timestamps(),
    CheckConstraint("coupon_type in ('fixed_amount', 'percentage')", name="coupon_type"),
    CheckConstraint("frequency in ('once', 'recurring', 'forever')", name="frequency"),
    CheckConstraint("status in ('active', 'terminated')", name="status"),
)


applied_coupons = Table(
    "applied_coupons",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("coupon_id", BigInteger, ForeignKey("coupons.id", ondelete="RESTRICT"),
           nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    Column("amount_cents", Numeric),
    Column("amount_currency", Text),
    Column("percentage_rate", Numeric),
    Column("frequency", Text, nullable=False),
    Column("frequency_duration", Integer),
    Column("frequency_duration_remaining", Integer),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("terminated_at", DateTime(timezone=True)),
    # The catalog document that applied it (null: applied through the API or the CLI).
    Column("document", JSONB),
    Column("digest", Text),
    *_timestamps(),
    CheckConstraint("frequency in ('once', 'recurring', 'forever')", name="frequency"),
    CheckConstraint("status in ('active', 'terminated')", name="status"),
    Index("ix_applied_coupons_customer", "customer_id"),
)


coupon_credits = Table(
    "coupon_credits",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("applied_coupon_id", BigInteger, ForeignKey("applied_coupons.id", ondelete="RESTRICT"),
           nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("amount_currency", Text, nullable=False),
    Column("before_taxes", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("invoice_id", "applied_coupon_id", name="uq_coupon_credits_invoice"),
    Index("ix_coupon_credits_applied_coupon", "applied_coupon_id"),
)
