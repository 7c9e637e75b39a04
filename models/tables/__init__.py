"""SQLAlchemy Core tables: the one description of the schema that Alembic migrations follow.

Core (not the ORM) because every hot path here is set-based SQL (COPY, INSERT ... SELECT,
ON CONFLICT); the ORM would only stand between us and Postgres. Money and quantities are
``numeric`` without a fixed scale so nothing is rounded before the explicit rounding step.

One module per area; this package's ``metadata`` holds every table (Alembic's target).
"""

from tallyflow.models.tables.access import api_keys
from tallyflow.models.tables.alerts import (
    alert_evaluations,
    triggered_alerts,
    usage_alert_thresholds,
    usage_alerts,
)
from tallyflow.models.tables.base import metadata
from tallyflow.models.tables.catalog import (
    add_ons,
    billable_metric_filters,
    billable_metrics,
    billing_entities,
    charge_filters,
    charges,
    customers,
    plan_versions,
    plans,
    subscriptions,
    taxes,
    wallet_recurring_rules,
    wallets,
)
from tallyflow.models.tables.corrections import (
    credit_note_credits,
    credit_note_items,
    credit_notes,
)
from tallyflow.models.tables.discounts import applied_coupons, coupon_credits, coupons
from tallyflow.models.tables.ingestion import (
    RUN_STATUSES,
    api_mark,
    api_writes,
    event_archives,
    event_requests,
    event_voids,
    events,
    ingest_objects,
    ingest_runs,
    rejected_rows,
    run_history,
)
from tallyflow.models.tables.invoicing import (
    advance_fees,
    invoice_fees,
    invoice_pdfs,
    invoice_subscriptions,
    invoices,
    lifetime_usages,
    progressive_invoices,
)
from tallyflow.models.tables.outbox import (
    webhook_attempts,
    webhook_endpoints,
    webhook_signing,
    webhooks,
)
from tallyflow.models.tables.rating import (
    change_set_bounds,
    change_set_members,
    change_sets,
    snapshot_archives,
    usage_amounts,
    usage_folds,
    usage_marks,
    usage_snapshots,
    usage_states,
)
from tallyflow.models.tables.wallet_ledger import (
    running_usage,
    running_usage_watermark,
    wallet_alert_rules,
    wallet_alerts,
    wallet_balances,
    wallet_runs,
    wallet_transactions,
    wallet_usage_positions,
)

__all__ = [
    "RUN_STATUSES",
    "add_ons",
    "alert_evaluations",
    "api_keys",
    "applied_coupons",
    "coupon_credits",
    "coupons",
    "billable_metric_filters",
    "billable_metrics",
    "billing_entities",
    "change_set_bounds",
    "change_set_members",
    "change_sets",
    "charge_filters",
    "charges",
    "credit_note_credits",
    "credit_note_items",
    "credit_notes",
    "customers",
    "event_archives",
    "event_requests",
    "event_voids",
    "events",
    "api_mark",
    "api_writes",
    "ingest_objects",
    "ingest_runs",
    "advance_fees",
    "invoice_fees",
    "invoice_pdfs",
    "invoice_subscriptions",
    "invoices",
    "lifetime_usages",
    "metadata",
    "plan_versions",
    "plans",
    "progressive_invoices",
    "rejected_rows",
    "run_history",
    "running_usage",
    "running_usage_watermark",
    "snapshot_archives",
    "subscriptions",
    "taxes",
    "triggered_alerts",
    "usage_alert_thresholds",
    "usage_alerts",
    "usage_amounts",
    "usage_folds",
    "usage_marks",
    "usage_snapshots",
    "usage_states",
    "wallet_alert_rules",
    "wallet_alerts",
    "wallet_balances",
    "wallet_recurring_rules",
    "wallet_runs",
    "wallet_transactions",
    "wallet_usage_positions",
    "wallets",
    "webhook_attempts",
    "webhook_endpoints",
    "webhook_signing",
    "webhooks",
]
