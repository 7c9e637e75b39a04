"""Period close: the step of the billing cycle that turns ended periods into invoices.

Orchestration only (tasks.invoicing does the work). It runs after the usage snapshot and the
wallet deductions of the hour, so a finalized invoice counts every deduction posted for its
period; events for finalized invoices go out after the invoices committed. Their PDFs are not
made here (100,000 PDFs take hours, docs/scaling.md §6): the close reports how many wait for
the ``invoice-pdfs`` flow (flows/invoice_pdfs.py, docs/scaling.md §3).
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow

from tallyflow.flows.contained import report_contained
from tallyflow.flows.params import OptionalMoment, moment_label, resolve_as_of, run_param
from tallyflow.models.lago.summaries import CloseSummary
from tallyflow.tasks.invoicing import (
    bill_thresholds_task,
    close_periods_task,
    emit_invoice_events_task,
    issue_credit_invoices_task,
    pending_pdfs_task,
    report_thresholds,
)
from tallyflow.tasks.runs import HOOKS, ContainedFailures, tracked


def _bill_thresholds(moment: datetime) -> None:
    """Usage thresholds crossed: progressive invoices, before the close deducts them (§20);
    contained, so the close goes on whatever happens there."""
    try:
        report_thresholds(bill_thresholds_task(moment))
    except Exception as exc:  # contained: the close goes on
        print(f"usage thresholds: evaluation failed ({type(exc).__name__}: {exc})")


def _close_name() -> str:
    return f"close periods {moment_label(run_param('at', default=None)) or 'scheduled'}"


@flow(name="close-periods", flow_run_name=_close_name, log_prints=True, **HOOKS)
@tracked
def close_periods_flow(
    at: OptionalMoment = None, skip_customers: list[str] | None = None,
    raise_contained: bool = True,
) -> CloseSummary:
    """Close every billing period that ended before ``at``: draft or refresh its invoice,
    finalize it once the ingest watermark and the customer's grace period allow.

    Args:
        at: The moment to close as of, with its offset. Leave empty for the time this run was
            scheduled; a rerun of an hour never changes a finalized invoice.
        skip_customers: External ids of customers not to close in this run (an earlier step
            of the hour failed for them); listed as withheld.
        raise_contained: End Failed naming the customers whose close failed alone (the
            others commit); the billing cycle turns it off and fails at its own end.
    """
    moment: datetime = resolve_as_of(at)
    credit_invoices = issue_credit_invoices_task()  # paid top-ups of the wallet flow
    _bill_thresholds(moment)
    summary = close_periods_task(moment, skip_customers)
    summary["credit_invoices"] = credit_invoices
    summary["events_emitted"] = emit_invoice_events_task()
    summary["pdfs_pending"] = pending_pdfs_task()  # for the invoice-pdfs flow
    print(f"periods closed as of {moment.isoformat()}: {summary['finalized']} finalized,"
          f" {summary['drafts']} draft(s), {summary['late_events']} late event(s),"
          f" {summary['pdfs_pending']} PDF(s) pending for the invoice-pdfs flow")
    if summary["contained"] and raise_contained:
        report_contained(summary["contained"])
        raise ContainedFailures(summary["contained"], summary)
    return summary
