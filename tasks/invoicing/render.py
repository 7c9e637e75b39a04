"""An invoice as people read it: HTML from a template, and PDF when WeasyPrint is installed.

Takes Lago's invoice object (``{"invoice": {...}}``'s body) and returns text or bytes; it lives
with the tasks because it reads a template file and uses rendering engines (the domain in
``models/`` imports neither).
PDF rendering is an optional extra (``pip install tallyflow[pdf]``); without it the HTML is
still made and kept, and :func:`render_pdf` says how to get the PDF.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tallyflow.models.lago.money import money

_TEMPLATES = Path(__file__).resolve().parent / "templates"  # tasks/invoicing/templates
_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
)


class PdfUnavailable(RuntimeError):
    """WeasyPrint (the ``pdf`` extra) is not installed."""


def render_html(invoice: Mapping[str, Any]) -> str:
    template = _ENV.get_template("invoice.html")
    currency = invoice["currency"]
    return template.render(invoice=invoice, money=lambda cents: money(cents, currency))


def render_credit_note_html(note: Mapping[str, Any]) -> str:
    """A credit note's document (Lago's object with items and applied taxes)."""
    template = _ENV.get_template("credit_note.html")
    currency = note["currency"]
    return template.render(note=note, money=lambda cents: money(cents, currency))


def render_pdf(html: str) -> bytes:
    try:
        from weasyprint import HTML  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:  # OSError: the wheel's system libraries are missing
        raise PdfUnavailable(
            "PDF needs WeasyPrint: pip install 'tallyflow[pdf]' (and libpango on Linux)"
        ) from exc
    return bytes(HTML(string=html).write_pdf())


def pdf_available() -> bool:
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True
