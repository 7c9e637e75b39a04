"""Invoicing: period close (draft invoices for ended periods, refreshed until they may be
finalized), invoice documents and their PDFs, credit invoices, one-off invoices of add-ons, and
charges paid in advance.

This ``__init__`` is the room's only way in from outside it (docs/architecture.md §8).

Why it is safe to rerun, retry and crash: ``tallyflow.tasks.invoicing.close`` (and
docs/architecture.md §3, invariants 2-5).
"""

from tallyflow.tasks.invoicing.advance import (
    EstimateError,
    advance_charges_task,
    estimate_advance_fees,
    list_advance_fees,
)
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.close import (
    close_periods,
    close_periods_task,
    cut_short,
    ended_periods,
    issuing_date,
)
from tallyflow.tasks.invoicing.credit import (
    issue_credit_invoices,
    issue_credit_invoices_task,
    record_payment,
)
from tallyflow.tasks.invoicing.documents import (
    InvoiceError,
    InvoiceQuery,
    count_invoices,
    fee_objects,
    find_invoice,
    invoice_document,
    invoice_standing,
    list_invoices,
    render_sealed,
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
from tallyflow.tasks.invoicing.one_off import OneOffResult, create_one_off_invoice
from tallyflow.tasks.invoicing.past_usage import past_usage
from tallyflow.tasks.invoicing.pdfs import (
    DEFAULT_CHUNK,
    make_missing_pdfs,
    pending_pdfs,
    pending_pdfs_task,
    render_pdf_chunk,
    render_pdf_chunk_task,
)
from tallyflow.tasks.invoicing.progressive import (
    ProgressiveResult,
    ProgressiveRun,
    bill_all_thresholds,
    bill_thresholds,
    bill_thresholds_task,
    lifetime_of,
    lifetime_usage,
    report_thresholds,
    set_historical_usage,
)
from tallyflow.tasks.invoicing.render import (
    PdfUnavailable,
    pdf_available,
    render_credit_note_html,
    render_pdf,
)
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
    "announce_invoices",
    "BATCH",
    "DEFAULT_CHUNK",
    "DEFAULT_PREFIX",
    "DEFAULT_SETTLE_HOURS",
    "LISTED_IN_SUMMARY",
    "MAX_INVOICE_EVENTS",
    "PREFIX_ENV",
    "SETTLE_ENV",
    "CloseCatalog",
    "CloseSummary",
    "CustomerInfo",
    "EntityInfo",
    "InvoiceError",
    "M",
    "OneOffResult",
    "PdfUnavailable",
    "PendingInvoiceEvents",
    "PlanInfo",
    "EstimateError",
    "advance_charges_task",
    "estimate_advance_fees",
    "close_periods",
    "close_periods_task",
    "InvoiceQuery",
    "count_invoices",
    "create_one_off_invoice",
    "ProgressiveResult",
    "ProgressiveRun",
    "bill_all_thresholds",
    "bill_thresholds",
    "bill_thresholds_task",
    "report_thresholds",
    "lifetime_of",
    "lifetime_usage",
    "set_historical_usage",
    "cut_short",
    "emit_invoice_events_task",
    "ended_periods",
    "fee_objects",
    "find_invoice",
    "ingest_watermark",
    "invoice_document",
    "invoice_standing",
    "invoice_prefix",
    "issue_credit_invoices",
    "issue_credit_invoices_task",
    "issuing_date",
    "late_usage",
    "late_usage_count",
    "list_advance_fees",
    "list_invoices",
    "load_close_catalog",
    "make_missing_pdfs",
    "mark_invoice_events_emitted",
    "past_usage",
    "pdf_available",
    "pending_invoice_events",
    "pending_pdfs",
    "pending_pdfs_task",
    "period_input",
    "record_payment",
    "render_credit_note_html",
    "render_pdf",
    "render_pdf_chunk",
    "render_pdf_chunk_task",
    "render_sealed",
    "settle_hours",
]
