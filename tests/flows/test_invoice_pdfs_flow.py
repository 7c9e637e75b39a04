"""Invoice PDFs leave the billing cycle for their own flow (real Prefect, real WeasyPrint).

The close finalizes invoices without PDFs and says how many wait; a download before the flow
renders the kept HTML on the fly (storing nothing); the ``invoice-pdfs`` flow renders each
missing PDF once, a rerun renders none, two runs at the same time split the work (SKIP LOCKED)
and a run stops at its count and time bounds with the rest left for the next.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.flows.billing import billing_cycle
from tallyflow.flows.invoice_pdfs import invoice_pdfs
from tallyflow.infra import failpoints
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import PdfRunSummary
from tallyflow.tasks.invoicing import close_periods, pdf_available
from tests.flows.test_billing_artifact import _latest_billing_artifact
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    ingested_until,
    usage_events,
)

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.skipif(not pdf_available(), reason="the pdf extra (WeasyPrint) is not installed"),
]
runner = CliRunner()

# More customers on the Mistral plan (UTC, calendar periods): each March period closes at CLOSE.
_MORE = [
    "insert into customers (external_id, currency, timezone, document, digest)"
    " select 'pdf_' || i, 'USD', 'UTC', '{}', 'x' from generate_series(1, :n) i",
    "insert into subscriptions (external_id, customer_id, plan_id, billing_time,"
    " subscription_at, document, digest)"
    " select 'sub_' || c.external_id, c.id, p.id, 'calendar', '2025-03-01T00:00:00Z', '{}', 'x'"
    " from customers c, (select id from plans where code = 'mistral_per_token') p"
    " where c.external_id like 'pdf\\_%'",
]


def pdf_counts(engine: Engine) -> tuple[int, int]:
    """(finalized invoices, PDFs stored)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "select (select count(*) from invoices where status = 'finalized'),"
            " (select count(*) from invoice_pdfs)")).one()
    return int(row[0]), int(row[1])


def finalized_invoices(engine: Engine, folder: Path, more: int) -> int:
    """acme's invoice and ``more`` customers' ones, finalized by the close (no PDFs)."""
    catalog(engine, folder, plan={"amount_cents": 3100}, wallet=False)
    with engine.begin() as conn:
        for statement in _MORE:
            conn.execute(text(statement), {"n": more})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    close_periods(engine, CLOSE, now=CLOSE)
    finalized, stored = pdf_counts(engine)
    assert (finalized, stored) == (more + 1, 0)
    return finalized


def _artifact(key: str) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1,
            sort="CREATED_DESC")
    assert found, key
    return str(found[0].data)


def test_the_close_leaves_pdfs_to_the_pdf_flow(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    summary = billing_cycle(hour=CLOSE)
    # the period's invoice and the credit invoice of the purchased credits: finalized, no PDF
    assert summary["invoices"]["finalized"] == 1
    assert summary["invoices"]["pdfs_pending"] == 2 and "pdfs" not in summary["invoices"]
    assert pdf_counts(engine) == (2, 0)
    assert "PDFs pending for the `invoice-pdfs` flow (every 10 minutes; `tallyflow invoices" \
           " pdfs` now): 2" in _latest_billing_artifact()

    # downloadable before the flow made it: rendered from the kept HTML, nothing stored
    early = tmp_path / "early.pdf"
    made = runner.invoke(app, ["invoices", "pdf", "TF-001-002", "-o", str(early)])
    assert made.exit_code == 0, made.output
    assert early.read_bytes().startswith(b"%PDF")
    assert pdf_counts(engine) == (2, 0)

    first = invoice_pdfs()
    assert (first["rendered"], first["stored"], first["remaining"]) == (2, 2, 0)
    assert first["stopped"] == "nothing left to claim"
    assert mismatches(first, PdfRunSummary) == []
    assert pdf_counts(engine) == (2, 2)
    assert "- rendered and stored: 2 in" in _artifact("invoice-pdfs")
    again = invoice_pdfs()  # a rerun: nothing to render
    assert (again["rendered"], again["remaining"]) == (0, 0)
    assert mismatches(again, PdfRunSummary) == []  # pdfs_per_second 0: an integer, a number
    assert pdf_counts(engine) == (2, 2)
    kept = tmp_path / "kept.pdf"
    assert runner.invoke(app, ["invoices", "pdf", "TF-001-002", "-o", str(kept)]).exit_code == 0
    with engine.connect() as conn:
        stored = conn.execute(text(
            "select p.pdf from invoice_pdfs p join invoices v on v.id = p.invoice_id"
            " where v.number = 'TF-001-002'")).scalar_one()
    assert kept.read_bytes() == bytes(stored)  # the download is the stored PDF now
    # the next cycle has none pending; the runs are in the history like the other flows'
    assert billing_cycle(hour=CLOSE + timedelta(hours=1))["invoices"]["pdfs_pending"] == 0
    with engine.connect() as conn:
        runs = conn.execute(text(
            "select status, figures from run_history where kind = 'invoice PDFs'"
            " order by started_at")).all()
    assert [(r.status, r.figures["rendered"]) for r in runs] == [
        ("completed", 2), ("completed", 0)]


def test_two_runs_at_once_render_each_pdf_once(engine: Engine, tmp_path: Path) -> None:
    """While run A holds its first chunk (claimed, rendered, not committed), run B runs whole:
    it must skip A's invoices (never wait for them: A waits for B here, so waiting would hang
    until the join's timeout) and render every other one; A then commits its chunk and finds
    nothing left. Each PDF is rendered once: the renders add up to the invoices."""
    total = finalized_invoices(engine, tmp_path, more=7)
    second: dict[str, Any] = {}
    started = threading.Event()

    def run_b(_conn: Any) -> None:
        if started.is_set():  # only inside A's first chunk
            return
        started.set()
        worker = threading.Thread(target=lambda: second.update(invoice_pdfs(chunk=2)))
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "run B waited for run A's locks"

    with failpoints.hooked("pdfs.before_commit", run_b):
        first = invoice_pdfs(chunk=3)
    assert started.is_set() and second, "run B did not run inside run A's chunk"
    assert first["rendered"] == 3 and second["rendered"] == total - 3
    for run in (first, second):
        assert run["stored"] == run["rendered"]
    assert first["rendered"] + second["rendered"] == total
    assert pdf_counts(engine) == (total, total)


def test_two_free_running_runs_split_the_work(engine: Engine, tmp_path: Path) -> None:
    """Started together, without any hook: whatever the interleaving, the renders add up."""
    total = finalized_invoices(engine, tmp_path, more=9)
    results: list[dict[str, Any]] = []
    gate = threading.Barrier(2)

    def run() -> None:
        gate.wait()
        results.append(invoice_pdfs(chunk=1))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 2
    assert sum(r["rendered"] for r in results) == total == sum(r["stored"] for r in results)
    assert pdf_counts(engine) == (total, total)


def test_a_run_stops_at_its_bounds_and_the_next_goes_on(engine: Engine, tmp_path: Path) -> None:
    total = finalized_invoices(engine, tmp_path, more=5)
    counted = invoice_pdfs(max_pdfs=4, chunk=3)
    assert (counted["rendered"], counted["remaining"]) == (4, total - 4)
    assert counted["stopped"] == "count bound (4 PDFs)" and counted["chunks"] == 2
    # a one-second bound, and a first chunk that takes longer: it stops after that chunk
    with failpoints.hooked("pdfs.before_commit", lambda _conn: time.sleep(1.1)):
        timed = invoice_pdfs(max_seconds=1, chunk=1)
    assert (timed["rendered"], timed["remaining"]) == (1, total - 5)
    assert timed["stopped"] == "time bound (1 s)"
    rest = json.loads(runner.invoke(app, ["invoices", "pdfs", "--json"]).stdout)
    assert (rest["rendered"], rest["remaining"]) == (total - 5, 0)
    assert pdf_counts(engine) == (total, total)


def test_the_close_command_says_how_many_pdfs_wait(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100}, wallet=False)
    with engine.begin() as conn:
        for statement in _MORE:
            conn.execute(text(statement), {"n": 2})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    # the flow runs inside the command's Prefect session (the local server, no per-run
    # heartbeat), like every other command's flows; not in a temporary server of its own
    from tallyflow.cli import common, invoices

    sessions: list[str] = []

    @contextmanager
    def recorded() -> Iterator[None]:
        with common.flow_session():
            sessions.append("entered")
            yield

    monkeypatch.setattr(invoices, "flow_session", recorded)
    closed = runner.invoke(app, ["invoices", "close", "--at", CLOSE.isoformat()])
    assert closed.exit_code == 0, closed.output
    assert sessions == ["entered"]
    assert "3 finalized" in closed.stdout
    assert "3 PDF(s) pending (`tallyflow invoices pdfs`)" in closed.stdout
    assert pdf_counts(engine) == (3, 0)
