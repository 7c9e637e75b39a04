"""Period close I/O: draft invoices for ended periods, refreshed until they may be finalized.

Why it is safe to rerun, retry and crash: ``tallyflow.tasks.invoicing.close`` (and
docs/architecture.md §3, invariants 2-5).
"""

from tallyflow.tasks.invoicing.close import (
    close_periods,
    close_periods_task,
    cut_short,
    ended_periods,
    issuing_date,
)
from tallyflow.tasks.invoicing.events import (
    MAX_INVOICE_EVENTS,
    PendingInvoiceEvents,
    emit_invoice_events_task,
    mark_invoice_events_emitted,
    pending_invoice_events,
)
from tallyflow.tasks.invoicing.inputs import (
    BATCH,
    CloseCatalog,
    CloseSummary,
    CustomerInfo,
    EntityInfo,
    M,
    PlanInfo,
    load_close_catalog,
    period_input,
)
from tallyflow.tasks.invoicing.late import late_usage, late_usage_count
from tallyflow.tasks.invoicing.watermark import (
    DEFAULT_PREFIX,
    DEFAULT_SETTLE_HOURS,
    LISTED_IN_SUMMARY,
    PREFIX_ENV,
    SETTLE_ENV,
    ingest_watermark,
    invoice_prefix,
    settle_hours,
)

__all__ = [
    "emit_invoice_events_task",
    "BATCH",
    "CloseCatalog",
    "CloseSummary",
    "CustomerInfo",
    "DEFAULT_PREFIX",
    "DEFAULT_SETTLE_HOURS",
    "EntityInfo",
    "LISTED_IN_SUMMARY",
    "M",
    "MAX_INVOICE_EVENTS",
    "PREFIX_ENV",
    "PendingInvoiceEvents",
    "PlanInfo",
    "SETTLE_ENV",
    "close_periods",
    "close_periods_task",
    "cut_short",
    "ended_periods",
    "ingest_watermark",
    "invoice_prefix",
    "issuing_date",
    "late_usage",
    "late_usage_count",
    "load_close_catalog",
    "mark_invoice_events_emitted",
    "pending_invoice_events",
    "period_input",
    "settle_hours",
]
