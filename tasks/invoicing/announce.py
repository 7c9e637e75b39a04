"""Invoices announced by webhook, in the transaction that changes them (docs/architecture.md
§17): ``invoice.created`` when an invoice is finalized (Lago sends it for a finalized invoice,
``invoices/refresh_draft_and_finalize_service.rb``; drafts are not announced) and
``invoice.payment_status_updated`` when its payment is recorded (``invoices/update_service.rb``).
The payload is the invoice as the API shows it (``invoice_objects``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from tallyflow.tasks.invoicing.documents import _INVOICES, invoice_objects
from tallyflow.tasks.webhooks import enqueue_many, subscribed


def announce_invoices(conn: Connection, invoice_ids: Sequence[int],
                      webhook_type: str = "invoice.created") -> None:
    """Enqueue ``webhook_type`` for these invoices as they are now in ``conn``'s transaction;
    nothing is read when no endpoint takes the type. Keyed per invoice (and payment status),
    so a rerun that finalizes nothing new announces nothing again."""
    if not invoice_ids or not subscribed(conn, webhook_type):
        return
    rows = conn.execute(text(_INVOICES + " where v.id = any(cast(:ids as bigint[]))"
                             " order by v.id"), {"ids": list(invoice_ids)}).all()
    paid = webhook_type == "invoice.payment_status_updated"
    enqueue_many(conn, webhook_type, "invoice", [
        (dict(invoice), f"{webhook_type}:{invoice['lago_id']}"
         + (f":{invoice['payment_status']}" if paid else ""))
        for invoice in invoice_objects(conn, rows)])
