"""kill -9 the ``invoice-pdfs`` flow inside a chunk's transaction, then rerun it.

The child renders PDFs two per transaction and dies by SIGKILL at its second chunk, after the
insert and before the commit: the first chunk's PDFs are kept, the second's are gone with its
locks, and the rerun renders exactly the rest (each invoice's PDF once, none missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.invoice_pdfs import invoice_pdfs
from tallyflow.tasks.invoicing import pdf_available
from tallyflow.tasks.runs import reap_stale
from tests.flows.test_invoice_pdfs_flow import finalized_invoices, pdf_counts

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.skipif(not pdf_available(), reason="the pdf extra (WeasyPrint) is not installed"),
]
ROOT = Path(__file__).resolve().parents[2]
_CHILD = """
from tallyflow.flows.invoice_pdfs import invoice_pdfs
invoice_pdfs(chunk=2)
"""


def test_kill_inside_a_chunk_then_the_rerun_finishes_the_job(
    engine: Engine, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    total = finalized_invoices(engine, tmp_path, more=6)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "TALLYFLOW_FAILPOINTS": "pdfs.before_commit=2"}
    child = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                           text=True, timeout=300, check=False, cwd=ROOT)
    assert child.returncode == -signal.SIGKILL, (
        f"pdfs.before_commit=2 was not reached: exit {child.returncode}\n{child.stderr[-3000:]}")
    assert pdf_counts(engine) == (total, 2)  # the first chunk committed, the second rolled back
    assert reap_stale(engine, stale=0)  # the killed run stops beating: recorded crashed
    rerun = invoice_pdfs()
    assert (rerun["rendered"], rerun["stored"], rerun["remaining"]) == (total - 2, total - 2, 0)
    assert pdf_counts(engine) == (total, total)
    with engine.connect() as conn:
        statuses = conn.execute(text(
            "select status from run_history where kind = 'invoice PDFs' order by started_at"
        )).scalars().all()
    assert statuses == ["crashed", "completed"]
