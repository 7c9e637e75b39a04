"""Invoice tables. A finalized invoice, its fees and its periods never change (triggers), but
for one step: finalized -> voided (migration 0021, docs/architecture.md §13).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, _timestamps, metadata

invoices = Table(
    "invoices",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    Column("invoice_type", Text, nullable=False, server_default=text("'subscription'")),
    Column("issuing_date", Date, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'draft'")),
    Column("payment_status", Text, nullable=False, server_default=text("'pending'")),
    Column("currency", Text, nullable=False),
    Column("sequential_id", Integer),
    Column("number", Text, unique=True),
    Column("fees_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("coupons_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("credit_notes_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("prepaid_credit_amount_cents", Numeric, nullable=False, server_default=text("0")),
    # Lago's split of the prepaid credits into granted and purchased ones, each set only when
    # positive (migration 0025)
    Column("prepaid_granted_credit_amount_cents", Numeric),
    Column("prepaid_purchased_credit_amount_cents", Numeric),
    Column("total_amount_cents", Numeric, nullable=False),
    Column("applied_taxes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("customer", JSONB, nullable=False),
    # The issuer as it was when the invoice was made (Lago's billing_entity), or null.
    Column("billing_entity", JSONB),
    # Earliest moment it may be finalized (period end + the customer's grace period).
    Column("finalize_after", DateTime(timezone=True), nullable=False),
    # The customer's net_payment_term (days) and the day payment is due (issuing date + term).
    Column("net_payment_term", Integer, nullable=False, server_default=text("0")),
    Column("payment_due_date", Date, nullable=False),
    Column("finalized_at", DateTime(timezone=True)),
    # When the tallyflow.invoice.finalized event went out (at least once, after commit).
    Column("emitted_at", DateTime(timezone=True)),
    Column("html", Text),
    # When it was voided (migration 0021; set exactly when ``status`` is ``voided``).
    Column("voided_at", DateTime(timezone=True)),
    # On a regenerated invoice: the voided invoice it replaces (Lago's column), at most once.
    Column("voided_invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT")),
    # A one-off invoice's posting key (migration 0024): a retried POST finds its invoice; the
    # digest of the request first posted with it, so another request under it is refused.
    Column("idempotency_key", Text, unique=True),
    Column("request_digest", Text),
    # What progressive invoices of its periods already billed (Lago's field; migration 0029,
    # docs/architecture.md §20), before taxes.
    Column("progressive_billing_credit_amount_cents", Numeric, nullable=False,
           server_default=text("0")),
    *_timestamps(),
    # One subscription invoice per customer and billing day; credit invoices (paid wallet
    # top-ups, migration 0008) are one per top-up, pay_in_advance ones one per subscription
    # and billing-cycle hour, advance_charges ones per regrouping (migration 0012). A
    # regenerated invoice shares its voided one's day (migration 0021): the key holds the
    # invoices the close writes, a successor is held by ``uq_invoices_voided_invoice``.
    Index("uq_invoices_customer_day", "customer_id", "issuing_date", "invoice_type",
          unique=True, postgresql_where=text("invoice_type = 'subscription'"
                                             " and voided_invoice_id is null")),
    UniqueConstraint("voided_invoice_id", name="uq_invoices_voided_invoice"),
    CheckConstraint("invoice_type in ('subscription', 'credit', 'pay_in_advance',"
                    " 'advance_charges', 'one_off', 'progressive_billing')",
                    name="invoice_type"),
    UniqueConstraint("customer_id", "sequential_id", name="uq_invoices_customer_sequence"),
    CheckConstraint("status in ('draft', 'finalized', 'voided')", name="status"),
    CheckConstraint("(status = 'voided') = (voided_at is not null)", name="voided"),
    CheckConstraint("payment_status in ('pending', 'succeeded', 'failed')",
                    name="payment_status"),
    CheckConstraint("status = 'draft' or (sequential_id is not null and number is not null)",
                    name="numbered"),
    Index("ix_invoices_status", "status"),
)


# Which subscription periods an invoice closes: a period is on at most one invoice per
# ``regeneration`` (migration 0021): the close writes 0, a regenerated invoice the one after its
# voided invoice's, so a voided invoice and its successor both keep the period.
invoice_subscriptions = Table(
    "invoice_subscriptions",
    metadata,
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT"),
           primary_key=True),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("from_datetime", DateTime(timezone=True), nullable=False),
    Column("to_datetime", DateTime(timezone=True), nullable=False),
    # The plan version the period was priced with (migration 0008; null: closed before 0008).
    Column("plan_version_id", BigInteger, ForeignKey("plan_versions.id", ondelete="RESTRICT")),
    Column("regeneration", Integer, primary_key=True, server_default=text("0")),
    Index("ix_invoice_subscriptions_invoice", "invoice_id"),
)


invoice_fees = Table(
    "invoice_fees",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           nullable=False),
    Column("position", Integer, nullable=False),
    # Null on a credit fee (a wallet top-up belongs to no subscription).
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT")),
    Column("external_subscription_id", Text),
    Column("item_type", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("invoice_display_name", Text),
    Column("filter_invoice_display_name", Text),
    Column("grouped_by", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("charge_id", BigInteger),
    Column("true_up", Boolean, nullable=False, server_default=text("false")),
    Column("units", Numeric, nullable=False),
    Column("events_count", BigInteger, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    # What coupons took of the fee before its taxes (migration 0023; models/coupons.py).
    Column("precise_coupons_amount_cents", Numeric, nullable=False, server_default=text("0")),
    Column("taxes_rate", Numeric, nullable=False),
    Column("taxes_precise_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("total_amount_cents", Numeric, nullable=False),
    Column("applied_taxes", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("from_datetime", DateTime(timezone=True), nullable=False),
    Column("to_datetime", DateTime(timezone=True), nullable=False),
    # A credit fee's paid top-up (migration 0008): each is invoiced once.
    Column("wallet_transaction_id", BigInteger,
           ForeignKey("wallet_transactions.id", ondelete="RESTRICT"), unique=True),
    # A pay-in-advance charge fee's event (Lago's fee.event_transaction_id; migration 0012).
    Column("event_transaction_id", Text),
    # An add-on fee's add-on, description and unit price (one-off invoices, migration 0024).
    Column("add_on_id", BigInteger, ForeignKey("add_ons.id", ondelete="RESTRICT")),
    Column("description", Text),
    Column("unit_amount_cents", Numeric),
    UniqueConstraint("invoice_id", "position", name="uq_invoice_fees_position"),
    CheckConstraint("item_type in ('subscription', 'charge', 'commitment', 'credit', 'add_on')",
                    name="item_type"),
    CheckConstraint("(item_type = 'credit') = (wallet_transaction_id is not null)"
                    " and (item_type in ('credit', 'add_on') or subscription_id is not null)",
                    name="credit_fee"),
    CheckConstraint("(item_type = 'add_on') = (add_on_id is not null)", name="add_on_fee"),
)


# A progressive_billing invoice's subscription period (migration 0029, docs/architecture.md
# §20). Not in ``invoice_subscriptions``: a progressive invoice bills part of an OPEN period, so
# it must not close the period, freeze its plan version or stop its wallet deductions (every
# "closed period" reader asks ``invoice_subscriptions``). ``sequence`` numbers the period's
# progressive invoices: (subscription, period_start, sequence) is unique, so two evaluators
# cannot both issue the same crossing. ``prepaid_usage_cents``: the hourly wallet deductions it
# showed as prepaid (no money moved for them), which the period-end invoice no longer counts.
progressive_invoices = Table(
    "progressive_invoices",
    metadata,
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           primary_key=True),
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT"),
           nullable=False),
    Column("external_subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("lifetime_usage_amount_cents", Numeric, nullable=False),
    Column("thresholds", JSONB, nullable=False),
    Column("prepaid_usage_cents", Numeric, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("subscription_id", "period_start", "sequence",
                     name="uq_progressive_invoices_crossing"),
)


# Lago's lifetime usage: only what a person sets is stored (``historical_usage_amount_cents``,
# PUT /subscriptions/{id}/lifetime_usage); the invoiced and current parts are read live
# (tasks/invoicing/progressive.py). Keyed by the external id, so it outlives plan changes and
# ``tallyflow archive`` (which moves events and snapshots, never invoices).
lifetime_usages = Table(
    "lifetime_usages",
    metadata,
    Column("external_subscription_id", Text, primary_key=True),
    Column("historical_usage_amount_cents", Numeric, nullable=False, server_default=text("0")),
    *_timestamps(),
    CheckConstraint("historical_usage_amount_cents >= 0", name="historical_not_negative"),
)


# The PDF of a finalized invoice, made from its kept HTML right after finalization (outside the
# closing transaction: rendering a page would hold the customers' locks, docs/scaling.md §6).
# Written once: a trigger rejects updates and deletes.
invoice_pdfs = Table(
    "invoice_pdfs",
    metadata,
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT"),
           primary_key=True),
    Column("pdf", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# Fees of charges paid in advance (migration 0012): one per (charge, filter bucket, event),
# written with the event's wallet payment or pay-in-advance invoice in one transaction, so an
# event is billed once whatever reruns, retries or crashes (tasks/invoicing/advance/charges.py).
# ``bucket`` is the charge filter's position (-1: the default bucket); ``charge_position``
# ties the fees of a plan's charge across its versions (a changed charge is a new row).
advance_fees = Table(
    "advance_fees",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("charge_id", BigInteger, ForeignKey("charges.id", ondelete="RESTRICT"),
           nullable=False),
    Column("charge_position", Integer, nullable=False),
    # what the charge has billed is keyed by its slot, not its position
    # (tasks/invoicing/advance/charges.py, charge_slots)
    Column("charge_slot", Text, nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("grouped_by", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="RESTRICT"),
           nullable=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id", ondelete="RESTRICT"),
           nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("transaction_id", Text, nullable=False),
    Column("event_timestamp", DateTime(timezone=True), nullable=False),
    # the billing-cycle hour that billed it (its pay_in_advance invoice's hour)
    Column("billing_hour", DateTime(timezone=True), nullable=False),
    Column("units", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("taxes_amount_cents", Numeric, nullable=False),
    Column("taxes_precise_amount_cents", Numeric, nullable=False),
    Column("invoiceable", Boolean, nullable=False),
    Column("regroup", Boolean, nullable=False),
    # what the wallets paid toward it (amount + taxes when fully paid)
    Column("prepaid_cents", Numeric, nullable=False, server_default=text("0")),
    # its pay_in_advance invoice, or the advance_charges invoice that regrouped it
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="RESTRICT")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("charge_id", "bucket", "event_id", name="uq_advance_fees_charge_event"),
    Index("ix_advance_fees_period", "subscription_id", "period_start", "charge_slot",
          "event_id"),
    Index("ix_advance_fees_regroup", "customer_id",
          postgresql_where=text("regroup and invoice_id is null")),
)
