"""Migration 0020 on a filled database: the finalized invoices whose documents were rendered
from the draft (they said "Status: draft") are re-rendered once, their PDFs removed for the
``invoice-pdfs`` flow to make again; every other document stays as it was, and the
immutability triggers are back afterwards."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tallyflow.infra import db, migrate
from tallyflow.tasks.invoicing.documents import invoice_objects, render_documents
from tallyflow.tasks.invoicing.render import pdf_available, render_html
from tests.tasks.invoicing.test_invoicing import _finalized

_STATUS = re.compile(r"<td>Status</td><td>([^<]*)</td>")


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _documents(engine: Engine) -> dict[int, tuple[str, str | None, bool]]:
    with engine.connect() as conn:
        return {r.id: (r.status, r.html, r.pdf) for r in conn.execute(text(
            "select v.id, v.status, v.html, p.invoice_id is not null as pdf from invoices v"
            " left join invoice_pdfs p on p.invoice_id = v.id"))}


def test_documents_rendered_as_draft_are_re_rendered_once(
    scratch_database: Callable[[], str], tmp_path: Path
) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    invoice = _finalized(engine, tmp_path)  # the period invoice; the catalog's credit one too
    with engine.begin() as conn:  # what the code before 0020 kept: the draft's rendering
        row = conn.execute(text("select * , customer::text as customer_text,"
                                " applied_taxes::text as applied_text,"
                                " billing_entity::text as entity_text from invoices"
                                " where lago_id = :l"), {"l": invoice["lago_id"]}).one()
        [old] = invoice_objects(conn, [row])
        old.update(status="draft", finalized_at=None)
        conn.execute(text("alter table invoices disable trigger invoices_final"))
        conn.execute(text("update invoices set html = :h where id = :id"),
                     {"h": render_html(old), "id": row.id})
        conn.execute(text("alter table invoices enable trigger invoices_final"))
    if pdf_available():
        from tallyflow.tasks.invoicing import make_missing_pdfs

        assert make_missing_pdfs(engine) >= 1  # made from the draft-looking document
    _migrate_to(engine, "0019", down=True)
    before = _documents(engine)
    assert _STATUS.findall(before[row.id][1] or "") == ["draft"]

    _migrate_to(engine, "head")  # 0020, and the later columns render_documents reads
    after = _documents(engine)
    status, html, pdf = after[row.id]
    assert _STATUS.findall(html or "") == ["finalized"] and not pdf
    with engine.connect() as conn:
        assert html == render_documents(conn, [row.id])[row.id]  # its final state, re-rendered
    for other, kept in before.items():  # nothing else changed
        if other != row.id:
            assert after[other] == kept
    # the triggers are back: a finalized invoice's document and its PDF cannot change
    with pytest.raises(DBAPIError, match="finalized"), engine.begin() as conn:
        conn.execute(text("update invoices set html = 'x' where id = :id"), {"id": row.id})
    if pdf_available():
        assert make_missing_pdfs(engine) == 1  # made again, from the repaired document
        with pytest.raises(DBAPIError, match="kept as made"), engine.begin() as conn:
            conn.execute(text("delete from invoice_pdfs"))
    # upgrading again finds nothing to repair
    _migrate_to(engine, "0019", down=True)
    again = _documents(engine)
    _migrate_to(engine, "0020")
    assert _documents(engine) == again
