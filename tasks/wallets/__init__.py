"""Wallet I/O: the ledger, opening and expiry, top-ups, usage deductions, alerts, runs.

Why it converges: docs/architecture.md §3, invariant 4 (the ledger's module docstring,
``tallyflow.tasks.wallets.ledger``, says how). Each submodule does one job; the flow calls the
``*_task`` wrappers in ``tallyflow.tasks.wallets.runs``.
"""

from tallyflow.tasks.wallets.alerts import (
    MAX_ALERT_EVENTS,
    AlertSummary,
    PendingAlerts,
    add_alert_rule,
    alert_event,
    alerts_summary_event,
    evaluate_alerts,
    mark_alerts_emitted,
    pending_alert_events,
)
from tallyflow.tasks.wallets.deductions import (
    STEP as DEDUCTIONS_STEP,
)
from tallyflow.tasks.wallets.deductions import (
    DeductionBatch,
    Negative,
    batch_dict,
    chunks,
    deduct_contained,
    deduct_customers,
    due_customers,
)
from tallyflow.tasks.wallets.ledger import (
    DEFAULT_BATCH,
    DEFAULT_GRACE_HOURS,
    SETTLE_PAID_ENV,
    USAGE_DEDUCTED,
    LedgerRow,
    WalletError,
    lock_customers,
    post,
    settle_paid_default,
)
from tallyflow.tasks.wallets.lifecycle import expire_wallets, open_catalog_wallets, open_wallets
from tallyflow.tasks.wallets.overview import (
    LiveScope,
    live_scopes,
    transaction_status,
    wallet_overview,
)
from tallyflow.tasks.wallets.report import customer_movements_task
from tallyflow.tasks.wallets.runs import (
    deduct_task,
    due_customers_task,
    evaluate_alerts_task,
    expire_wallets_task,
    finish_run,
    finish_run_task,
    interval_top_ups_task,
    mark_alerts_emitted_task,
    open_wallets_task,
    pending_alert_events_task,
    recent_runs,
    start_run,
    start_run_task,
    threshold_top_ups_task,
)
from tallyflow.tasks.wallets.topups import (
    TopUp,
    interval_top_ups,
    mark_paid,
    threshold_top_ups,
    top_up,
)

__all__ = [
    "transaction_status",
    "customer_movements_task",
    "AlertSummary",
    "DEFAULT_BATCH",
    "DEDUCTIONS_STEP",
    "DEFAULT_GRACE_HOURS",
    "DeductionBatch",
    "LedgerRow",
    "LiveScope",
    "MAX_ALERT_EVENTS",
    "Negative",
    "PendingAlerts",
    "SETTLE_PAID_ENV",
    "TopUp",
    "USAGE_DEDUCTED",
    "WalletError",
    "add_alert_rule",
    "alert_event",
    "alerts_summary_event",
    "batch_dict",
    "chunks",
    "deduct_contained",
    "deduct_customers",
    "deduct_task",
    "due_customers",
    "due_customers_task",
    "evaluate_alerts",
    "evaluate_alerts_task",
    "expire_wallets",
    "expire_wallets_task",
    "finish_run",
    "finish_run_task",
    "interval_top_ups",
    "interval_top_ups_task",
    "live_scopes",
    "lock_customers",
    "mark_alerts_emitted",
    "mark_alerts_emitted_task",
    "mark_paid",
    "open_catalog_wallets",
    "open_wallets",
    "open_wallets_task",
    "pending_alert_events",
    "pending_alert_events_task",
    "post",
    "recent_runs",
    "settle_paid_default",
    "start_run",
    "start_run_task",
    "threshold_top_ups",
    "threshold_top_ups_task",
    "top_up",
    "wallet_overview",
]
