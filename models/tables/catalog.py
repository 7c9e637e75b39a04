"""Catalog tables: taxes, add-ons, issuers, metrics, plans (and their versions), charges, customers,
subscriptions, wallets and their recurring rules.
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

taxes = Table(
    "taxes",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("rate", Numeric, nullable=False),
    Column("description", Text),
    Column("applied_to_organization", Boolean, nullable=False, server_default=text("false")),
    *_document(),
    *_timestamps(),
)


# Lago's add-ons (migration 0024): a default unit price for one-off invoices' fees
# (tasks/invoicing/one_off.py); a DELETE soft-deletes (``deleted_at``), as Lago's discard.
add_ons = Table(
    "add_ons",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("amount_currency", Text, nullable=False),
    Column("invoice_display_name", Text),
    Column("description", Text),
    Column("deleted_at", DateTime(timezone=True)),
    *_document(),
    *_timestamps(),
)


# The issuer of invoices; its fields are read from the document (tallyflow.tasks.invoicing).
billing_entities = Table(
    "billing_entities",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    *_document(),
    *_timestamps(),
)


billable_metrics = Table(
    "billable_metrics",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("aggregation_type", Text, nullable=False),
    Column("field_name", Text),
    Column("recurring", Boolean, nullable=False, server_default=text("false")),
    Column("rounding_function", Text),
    Column("rounding_precision", Integer),
    Column("weighted_interval", Text),
    *_document(),
    *_timestamps(),
)


billable_metric_filters = Table(
    "billable_metric_filters",
    metadata,
    _pk(),
    Column(
        "billable_metric_id",
        BigInteger,
        ForeignKey("billable_metrics.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", Text, nullable=False),
    Column("values", ARRAY(Text), nullable=False),
    UniqueConstraint("billable_metric_id", "key"),
)


plans = Table(
    "plans",
    metadata,
    _pk(),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("interval", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("amount_currency", Text, nullable=False),
    Column("pay_in_advance", Boolean, nullable=False, server_default=text("false")),
    Column("trial_period", Numeric),
    *_document(),
    *_timestamps(),
    # Lago's DELETE /plans/{code} (tallyflow api): the plan is kept (its subscriptions and
    # invoices refer to it) but no longer listed or subscribed to.
    Column("deleted_at", DateTime(timezone=True)),
)


# One row per version of a plan (migration 0008): the normalised document as applied and when it
# was in force. The plans row holds the current version's values; a version is never rewritten,
# only closed (effective_to) by the next one. The first version starts when the plan was first
# applied; a period priced before that uses it too (docs/architecture.md §6).
plan_versions = Table(
    "plan_versions",
    metadata,
    _pk(),
    Column("plan_id", BigInteger, ForeignKey("plans.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("effective_to", DateTime(timezone=True)),
    *_document(),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("plan_id", "version", name="uq_plan_versions_plan_version"),
    Index("uq_plan_versions_open", "plan_id", unique=True,
          postgresql_where=text("effective_to is null")),
    CheckConstraint("effective_to is null or effective_to > effective_from", name="range"),
)


charges = Table(
    "charges",
    metadata,
    _pk(),
    Column("plan_id", BigInteger, ForeignKey("plans.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("billable_metric_id", BigInteger, ForeignKey("billable_metrics.id"), nullable=False),
    Column("charge_model", Text, nullable=False),
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("pay_in_advance", Boolean, nullable=False, server_default=text("false")),
    Column("invoiceable", Boolean, nullable=False, server_default=text("true")),
    Column("prorated", Boolean, nullable=False, server_default=text("false")),
    # Lago's regroup_paid_fees: null or 'invoice' (migration 0012)
    Column("regroup_paid_fees", Text),
    Column("min_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("invoice_display_name", Text),
    Column("pricing_group_keys", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Versioning (migration 0008): a charge row never changes once written; an apply that
    # changes it closes it (effective_to) and opens a new row, so unchanged charges keep their
    # ids. Open rows (effective_to null) are the plan's current charges, one per position.
    Column("effective_from", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("effective_to", DateTime(timezone=True)),
    Index("uq_charges_open_position", "plan_id", "position", unique=True,
          postgresql_where=text("effective_to is null")),
)


charge_filters = Table(
    "charge_filters",
    metadata,
    _pk(),
    Column("charge_id", BigInteger, ForeignKey("charges.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("values", JSONB, nullable=False),
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("invoice_display_name", Text),
    UniqueConstraint("charge_id", "position"),
)


customers = Table(
    "customers",
    metadata,
    _pk(),
    Column("external_id", Text, nullable=False, unique=True),
    Column("name", Text),
    Column("email", Text),
    Column("currency", Text),
    Column("timezone", Text),
    *_document(),
    *_timestamps(),
)


subscriptions = Table(
    "subscriptions",
    metadata,
    _pk(),
    # One row per plan in force: a plan change (models/lifecycle.py) ends the row and starts
    # one with the same external_id, so it is unique among the rows not terminated only.
    Column("external_id", Text, nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("plan_id", BigInteger, ForeignKey("plans.id"), nullable=False),
    Column("name", Text),
    Column("billing_time", Text, nullable=False, server_default=text("'calendar'")),
    Column("subscription_at", DateTime(timezone=True), nullable=False),
    Column("ending_at", DateTime(timezone=True)),
    Column("terminated_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    # "generate" | "skip": whether a termination bills the partial period (migration 0009)
    Column("on_termination_invoice", Text, nullable=False,
           server_default=text("'generate'")),
    # "credit" | "refund" | "skip" | null (none): a plan paid in advance's unused days at a
    # termination or upgrade (migration 0022; tasks/corrections/credit_notes.py)
    Column("on_termination_credit_note", Text),
    # A plan change's row: when it took over (its periods keep subscription_at's anchor, as
    # Lago's do) and the row it took over from (migration 0009).
    Column("started_at", DateTime(timezone=True)),
    Column("previous_subscription_id", BigInteger, ForeignKey("subscriptions.id")),
    # When a plan change that ended or started this row was recorded: a backdated change's
    # periods wait for the watermark and grace period from then on (migration 0025).
    Column("plan_changed_at", DateTime(timezone=True)),
    *_document(),
    *_timestamps(),
    Index("ix_subscriptions_external_id", "external_id"),
    Index("uq_subscriptions_external_id_current", "external_id", unique=True,
          postgresql_where=text("terminated_at is null")),
)


wallets = Table(
    "wallets",
    metadata,
    _pk(),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text),
    Column("currency", Text, nullable=False),
    Column("rate_amount", Numeric, nullable=False),
    Column("paid_credits", Numeric, nullable=False, server_default=text("0")),
    Column("granted_credits", Numeric, nullable=False, server_default=text("0")),
    Column("priority", Integer, nullable=False, server_default=text("50")),
    Column("expiration_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    *_document(),
    *_timestamps(),
    UniqueConstraint("customer_id", "code"),
)


wallet_recurring_rules = Table(
    "wallet_recurring_rules",
    metadata,
    _pk(),
    Column("wallet_id", BigInteger, ForeignKey("wallets.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("interval", Text),
    Column("method", Text, nullable=False, server_default=text("'fixed'")),
    Column("paid_credits", Numeric, nullable=False, server_default=text("0")),
    Column("granted_credits", Numeric, nullable=False, server_default=text("0")),
    Column("threshold_credits", Numeric),
    Column("target_ongoing_balance", Numeric),
    Column("started_at", DateTime(timezone=True)),
    Column("expiration_at", DateTime(timezone=True)),
    UniqueConstraint("wallet_id", "position"),
)
