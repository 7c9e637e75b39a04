"""Period close: the step of the billing cycle that turns ended periods into invoices.

Orchestration only (tasks.invoicing does the work). It runs after the usage snapshot and the
wallet deductions of the hour, so a finalized invoice counts every deduction posted for its
period; events for finalized invoices go out after the invoices committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, task
from prefect.events import emit_event

from flows.params import OptionalMoment, moment_label, resolve_as_of, run_param
from tallyflow.resources import billing_engine
from tasks.credit_invoices import issue_credit_invoices_task
from tasks.history import HOOKS, tracked
from tasks.invoice_documents import make_missing_pdfs
from tasks.invoicing import (
    MAX_INVOICE_EVENTS,
    close_periods_task,
    mark_invoice_events_emitted,
    pending_invoice_events,
)
from tasks.retry import transient_retries


@task(name="emit-invoice-events", **transient_retries(retries=3, backoff_factor=1))
def emit_invoice_events_task() -> int:
    """One ``tallyflow.invoice.finalized`` event per invoice finalized and not yet announced
    (at least once: marked only after emitting); past the cap, one summary event."""
    engine = billing_engine()
    pending = pending_invoice_events(engine, MAX_INVOICE_EVENTS)
    for event in pending.events:
        emit_event(**event)
    if pending.more:
        emit_event(
            event="tallyflow.invoice.finalized-summary",
            resource={"prefect.resource.id": "tallyflow.invoices"},
            payload={"more_invoices": pending.more,
                     "total_amount_cents_by_currency": pending.more_total_cents},
        )
    if pending.ids:
        mark_invoice_events_emitted(engine, pending.ids)
    return len(pending.ids)


@task(name="make-invoice-pdfs", **transient_retries(retries=3, backoff_factor=1))
def make_pdfs_task() -> int:
    """PDFs of the invoices just finalized (from their kept HTML), outside the close's locks."""
    return make_missing_pdfs(billing_engine())


def _close_name() -> str:
    return f"close periods {moment_label(run_param('at', default=None)) or 'scheduled'}"


@flow(name="close-periods", flow_run_name=_close_name, log_prints=True, **HOOKS)
@tracked
def close_periods_flow(at: OptionalMoment = None) -> dict[str, Any]:
    """Close every billing period that ended before ``at``: draft or refresh its invoice,
    finalize it once the ingest watermark and the customer's grace period allow.

    Args:
        at: The moment to close as of, with its offset. Leave empty for the time this run was
            scheduled; a rerun of an hour never changes a finalized invoice.
    """
    moment: datetime = resolve_as_of(at)
    credit_invoices = issue_credit_invoices_task()  # paid top-ups of the wallet flow
    summary = close_periods_task(moment)
    summary["credit_invoices"] = credit_invoices
    summary["events_emitted"] = emit_invoice_events_task()
    summary["pdfs"] = make_pdfs_task()
    print(f"periods closed as of {moment.isoformat()}: {summary['finalized']} finalized,"
          f" {summary['drafts']} draft(s), {summary['late_events']} late event(s)")
    return summary
