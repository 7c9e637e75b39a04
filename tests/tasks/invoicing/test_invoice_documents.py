"""A finalized invoice's kept documents (HTML, and the PDF made from it) show its final state:
``finalized``, its number, its dates. They used to be rendered from the draft just before the
seal, so every finalized invoice said "Status: draft" for good (issue 32)."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import issue_credit_invoices, pdf_available
from tallyflow.tasks.invoicing.documents import invoice_document, list_invoices, render_documents
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.invoicing.test_invoicing import CLOSE, _finalized, hour, usage_events
from tests.tasks.invoicing.test_invoicing import catalog as apply_catalog
from tests.tasks.invoicing.test_invoicing_advance import START

_STATUS = re.compile(r"<td>Status</td><td>([^<]*)</td>")


def _kept(engine: Engine, invoice: dict[str, Any]) -> tuple[str, str]:
    """The kept HTML, and the HTML the invoice's stored final state renders to now."""
    with engine.connect() as conn:
        row = conn.execute(text("select id, html from invoices where lago_id = :l"),
                           {"l": invoice["lago_id"]}).one()
        return row.html, render_documents(conn, [row.id])[row.id]


def assert_final_documents(engine: Engine, invoice: dict[str, Any]) -> None:
    assert invoice["status"] == "finalized" and invoice["number"]
    kept, final = _kept(engine, invoice)
    assert _STATUS.findall(kept) == ["finalized"]
    assert f"Invoice {invoice['number']}" in kept
    assert f"<td>{invoice['issuing_date']}</td>" in kept
    # the whole document, not just its status line: rendering the stored final state again
    # gives the kept document byte for byte
    assert kept == final
    if pdf_available():
        from pypdf import PdfReader

        pdf = invoice_document(engine, invoice["number"], "pdf")
        assert isinstance(pdf, bytes)
        words = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
        assert "Status finalized" in words and "draft" not in words
        assert invoice["number"] in words


def test_a_period_invoice_is_kept_as_finalized_with_its_number(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path)
    assert invoice["number"] == "TF-001-001"
    assert_final_documents(engine, invoice)


def test_a_draft_still_says_draft(engine: Engine, tmp_path: Path) -> None:
    from tests.tasks.invoicing.test_invoicing_advance import APRIL_START

    apply_catalog(engine, tmp_path)
    usage_events(engine, tmp_path, APRIL_START - timedelta(days=20))
    hour(engine, CLOSE)  # ended, but nothing was ever ingested: a draft
    [draft] = list_invoices(engine)
    assert draft["status"] == "draft"
    html = invoice_document(engine, draft["lago_id"], "html")
    assert isinstance(html, str) and _STATUS.findall(html) == ["draft"]


def test_a_credit_invoice_is_kept_as_finalized_with_its_number(
    engine: Engine, tmp_path: Path
) -> None:
    apply_catalog(engine, tmp_path)
    open_catalog_wallets(engine)
    [issued] = issue_credit_invoices(engine)
    [invoice] = list_invoices(engine, invoice_type="credit")
    assert invoice["number"] == issued["number"]
    assert_final_documents(engine, invoice)


def test_a_start_invoice_paid_in_advance_is_kept_as_finalized(
    engine: Engine, tmp_path: Path
) -> None:
    apply_catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
                  start=START.isoformat())
    hour(engine, START + timedelta(hours=1))
    [invoice] = list_invoices(engine)
    assert_final_documents(engine, invoice)


@pytest.mark.skipif(not pdf_available(), reason="the pdf extra (WeasyPrint) is not installed")
def test_the_pdf_flow_stores_the_final_document(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.invoicing import make_missing_pdfs

    invoice = _finalized(engine, tmp_path)
    assert make_missing_pdfs(engine) == 1
    with engine.connect() as conn:
        stored = conn.execute(text("select count(*) from invoice_pdfs")).scalar_one()
    assert stored == 1
    assert_final_documents(engine, invoice)


TEMPLATES = Path(__file__).resolve().parents[3] / "tasks" / "invoicing" / "templates"


@pytest.mark.parametrize("name", ["invoice.html", "credit_note.html"])
def test_the_kept_documents_share_one_head_and_style(name: str) -> None:
    """The head and style are written once, in document.html; each document fills its blocks."""
    text = (TEMPLATES / name).read_text()
    assert text.startswith('{% extends "document.html" %}')
    assert "<head>" not in text and "<style>" not in text
