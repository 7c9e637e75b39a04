"""Invoicing: period close (draft invoices for ended periods, refreshed until they may be
finalized), invoice documents and their PDFs, credit invoices, and charges paid in advance.

This ``__init__`` is the room's only way in from outside it (docs/architecture.md §8).

Why it is safe to rerun, retry and crash: ``tallyflow.tasks.invoicing.close`` (and
docs/architecture.md §3, invariants 2-5).
"""

from tallyflow.tasks.invoicing.advance import advance_charges_task, list_advance_fees
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
    find_invoice,
    invoice_document,
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
from tallyflow.tasks.invoicing.pdfs import (
    DEFAULT_CHUNK,
    make_missing_pdfs,
    pending_pdfs,
    pending_pdfs_task,
    render_pdf_chunk,
    render_pdf_chunk_task,
)
from tallyflow.tasks.invoicing.render import PdfUnavailable, pdf_available
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
    "advance_charges_task",
    "list_advance_fees",
    "issue_credit_invoices",
    "issue_credit_invoices_task",
    "record_payment",
    "InvoiceError",
    "find_invoice",
    "invoice_document",
    "list_invoices",
    "render_sealed",
    "DEFAULT_CHUNK",
    "make_missing_pdfs",
    "pending_pdfs",
    "pending_pdfs_task",
    "render_pdf_chunk",
    "render_pdf_chunk_task",
    "PdfUnavailable",
    "pdf_available",
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
