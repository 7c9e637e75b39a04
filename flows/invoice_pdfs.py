"""Flow ``invoice-pdfs`` (every 10 minutes): the PDFs of finalized invoices that have none.

Orchestration only (``tasks/invoicing/pdfs.py`` claims, renders and stores). It exists so the
hourly ``billing-cycle`` never renders PDFs: at 100,000 subscriptions the hour in which every
period closes finalizes 100,000 invoices, whose PDFs take hours of one core (docs/scaling.md
§3). Each run is bounded by a count and a time, so it never runs for hours; what it leaves,
the next run (or a concurrent one: chunks are claimed with ``SKIP LOCKED``) renders.
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from tallyflow.flows.params import (
    PdfChunkSize,
    PdfCount,
    PdfSeconds,
    moment_label,
    resolve_as_of,
)
from tallyflow.models.lago.summaries import PdfRunSummary
from tallyflow.tasks.invoicing import DEFAULT_CHUNK, pending_pdfs_task, render_pdf_chunk_task
from tallyflow.tasks.runs import HOOKS, tracked

DEFAULT_MAX_PDFS = 5_000
DEFAULT_MAX_SECONDS = 300  # half of the 10-minute schedule: a run ends before the next starts


def _pdfs_name() -> str:
    return f"invoice pdfs {moment_label(resolve_as_of(None))}"


@flow(name="invoice-pdfs", flow_run_name=_pdfs_name, log_prints=True, **HOOKS)
@tracked
def invoice_pdfs(
    max_pdfs: PdfCount = DEFAULT_MAX_PDFS,
    max_seconds: PdfSeconds = DEFAULT_MAX_SECONDS,
    chunk: PdfChunkSize = DEFAULT_CHUNK,
) -> PdfRunSummary:
    """Render the PDFs of finalized invoices that have none yet, newest first, from the HTML
    kept at finalization; stop after ``max_pdfs`` or ``max_seconds``, the rest is for the next
    run. Safe to run beside itself and the billing cycle, and to kill.

    Args:
        max_pdfs: Render at most this many PDFs in this run.
        max_seconds: Stop claiming and rendering after this many seconds (a run overshoots by
            one PDF at most).
        chunk: PDFs rendered and stored per transaction; its invoices are locked meanwhile
            (a payment-status update of one of them waits for the chunk).
    """
    started = time.monotonic()
    pending = pending_pdfs_task()
    target = min(pending, max_pdfs)
    progress = create_progress_artifact(
        0.0, description=f"{target} of {pending} pending invoice PDF(s) in this run")
    assert isinstance(progress, UUID)  # created synchronously: this flow is not async
    rendered = stored = chunks = 0
    stopped = "nothing left to claim"
    while pending:
        if rendered >= max_pdfs:
            stopped = f"count bound ({max_pdfs} PDFs)"
            break
        left = max_seconds - (time.monotonic() - started)
        if left <= 0:
            stopped = f"time bound ({max_seconds} s)"
            break
        part = render_pdf_chunk_task(min(chunk, max_pdfs - rendered), left)
        chunks += 1
        rendered += part["rendered"]
        stored += part["stored"]
        update_progress_artifact(progress, min(100.0, 100.0 * rendered / max(target, 1)))
        if part["claimed"] == 0:  # none left, or the rest held by concurrent runs
            break
    update_progress_artifact(progress, 100.0)
    remaining = pending_pdfs_task() if pending else 0
    seconds = round(time.monotonic() - started, 3)
    summary: PdfRunSummary = {
        "rendered": rendered, "stored": stored, "remaining": remaining, "chunks": chunks,
        "seconds": seconds, "pdfs_per_second": round(rendered / seconds, 2) if seconds else 0,
        "stopped": stopped,
    }
    create_markdown_artifact(_artifact(summary, pending), key="invoice-pdfs",
                             description=f"{rendered} invoice PDF(s), {remaining} remaining")
    print(f"invoice PDFs: {rendered} rendered in {seconds} s, {remaining} remaining ({stopped})")
    return summary


def _artifact(summary: PdfRunSummary, pending: int) -> str:
    remaining = summary["remaining"]
    return "\n".join([
        "# Invoice PDFs", "",
        f"- pending at the start: {pending}",
        f"- rendered and stored: {summary['rendered']} in {summary['chunks']} chunk(s),"
        f" {summary['seconds']} s ({summary['pdfs_per_second']} PDFs/s)",
        f"- remaining: {remaining}"
        + (" (for the next run, or rendered by a concurrent one)" if remaining else ""),
        f"- stopped: {summary['stopped']}",
        "",
        "A finalized invoice without its PDF yet is still downloadable: `tallyflow invoices pdf`"
        " renders its kept HTML on the fly.",
    ])
