"""Invoice PDFs, made outside the billing cycle by the ``invoice-pdfs`` flow.

Why a flow of their own (docs/scaling.md §3, §6): a PDF costs a fraction of a second of one core
(WeasyPrint), so the hour in which 100,000 periods close would spend hours on them and delay the
next hour.
The close keeps each finalized invoice's HTML (what the PDF shows); the PDFs are rendered from
it later, in bounded runs, and a download before then renders the same HTML on the fly
(``tasks/invoicing/documents.py``, ``invoice_document``).

Why it is safe to run concurrently (with itself, on several workers, and with the billing
cycle) and to kill: each chunk is one transaction that

1. claims its invoices with ``FOR NO KEY UPDATE SKIP LOCKED`` (a row another run holds is
   skipped, never waited for; the lock is the weakest that excludes another claimer, so the
   foreign-key checks of rows referencing an invoice are not blocked, and an update of a
   claimed invoice, e.g. its payment status, waits for one chunk at most);
2. reads the claimed invoices again in a new statement: under READ COMMITTED that statement's
   snapshot sees every PDF committed by a run that held a row before, so a PDF committed
   between the claim's snapshot and its lock is not rendered twice;
3. renders and inserts the PDFs (``on conflict do nothing``: the primary key is the last word,
   and the ``invoice_pdfs_final`` trigger keeps a PDF as made) and commits.

Why row locks and not ``insert ... on conflict do nothing`` as the claim: the ``invoice_pdfs``
row is the PDF itself and can never be updated (the trigger), so it cannot be inserted before
the PDF exists; alone, ``on conflict`` only stops the second write, after both runs paid for the
render. A claim table would need a migration; the invoice row's lock needs none.

A crash or ``kill -9`` rolls back the open chunk and releases its locks; the next run renders
what is left (docs/architecture.md §3, invariant 2: a PDF is written once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import task
from sqlalchemy import Engine, text

from tallyflow.errors import UserError
from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago import summaries
from tallyflow.tasks.invoicing.render import pdf_available, render_pdf
from tallyflow.tasks.runs import transient_retries

# PDFs per transaction: their rendering is the longest a claim is held (docs/scaling.md §6)
DEFAULT_CHUNK = 10

# Newest first: pending invoices are the recent ones, so the walk down the primary key stops
# after ``limit`` rows instead of passing every older invoice that has its PDF already.
_CLAIM = text(
    """
    select v.id from invoices v
    where v.status in ('finalized', 'voided') and v.html is not null
      and not exists (select 1 from invoice_pdfs p where p.invoice_id = v.id)
    order by v.id desc limit :limit
    for no key update of v skip locked
    """
)
_CLAIMED = text(
    """
    select v.id, v.html from invoices v
    where v.id = any(cast(:ids as bigint[]))
      and not exists (select 1 from invoice_pdfs p where p.invoice_id = v.id)
    order by v.id desc
    """
)
_PENDING = text(
    """
    select count(*) from invoices v
    where v.status in ('finalized', 'voided') and v.html is not null
      and not exists (select 1 from invoice_pdfs p where p.invoice_id = v.id)
    """
)
_INSERT = text(
    "insert into invoice_pdfs (invoice_id, pdf) select * from"
    " unnest(cast(:ids as bigint[]), cast(:pdfs as bytea[]))"
    " on conflict (invoice_id) do nothing"
)


@dataclass(frozen=True)
class PdfChunk:
    """One chunk's transaction: invoices claimed, PDFs rendered, rows stored."""

    claimed: int
    rendered: int
    stored: int


def pending_pdfs(engine: Engine) -> int:
    """Finalized invoices with no PDF yet (those other runs are rendering included)."""
    with engine.connect() as conn:
        return int(conn.execute(_PENDING).scalar_one())


def _unavailable(pending: int) -> UserError:
    return UserError(f"{pending} invoice PDF(s) pending, and PDF rendering needs WeasyPrint",
                     hint="pip install 'tallyflow[pdf]' (and libpango on Linux); the HTML of"
                          " every finalized invoice is kept meanwhile")


def render_pdf_chunk(engine: Engine, size: int, seconds: float | None = None) -> PdfChunk:
    """Claim up to ``size`` finalized invoices without a PDF, render and store their PDFs in
    one transaction. With ``seconds``, stop rendering once that much time has passed (at least
    one PDF is rendered); the claimed rows not rendered are released at commit."""
    deadline = None if seconds is None else time.monotonic() + seconds
    with engine.begin() as conn:
        ids = list(conn.execute(_CLAIM, {"limit": size}).scalars())
        if not ids:
            return PdfChunk(0, 0, 0)
        rows = conn.execute(_CLAIMED, {"ids": ids}).all()
        if rows and not pdf_available():
            raise _unavailable(len(rows))
        done: list[int] = []
        pdfs: list[bytes] = []
        for row in rows:
            if done and deadline is not None and time.monotonic() >= deadline:
                break
            pdfs.append(render_pdf(row.html))
            done.append(row.id)
        stored = conn.execute(_INSERT, {"ids": done, "pdfs": pdfs}).rowcount if done else 0
        failpoint("pdfs.before_commit", conn)
    return PdfChunk(len(ids), len(done), stored)


def make_missing_pdfs(engine: Engine, limit: int = 10_000, chunk: int = DEFAULT_CHUNK) -> int:
    """Render up to ``limit`` missing PDFs, chunk by chunk (the flow's loop without its time
    bound, for benchmarks and scripts); how many were stored."""
    stored = 0
    while stored < limit:
        part = render_pdf_chunk(engine, min(chunk, limit - stored))
        stored += part.stored
        if part.claimed == 0:
            break
    return stored


@task(name="count-pending-pdfs", **transient_retries(retries=3, backoff_factor=1))
def pending_pdfs_task() -> int:
    """How many finalized invoices still wait for their PDF (the billing cycle reports it)."""
    return pending_pdfs(billing_engine())


@task(name="render-invoice-pdfs", **transient_retries(retries=3, backoff_factor=1))
def render_pdf_chunk_task(size: int, seconds: float | None = None) -> summaries.PdfChunk:
    """One chunk of PDFs in one transaction (a retry is a new claim: nothing was kept)."""
    chunk = render_pdf_chunk(billing_engine(), size, seconds)
    return {"claimed": chunk.claimed, "rendered": chunk.rendered, "stored": chunk.stored}


__all__ = ["DEFAULT_CHUNK", "PdfChunk", "make_missing_pdfs", "pending_pdfs", "pending_pdfs_task",
           "render_pdf_chunk", "render_pdf_chunk_task"]
