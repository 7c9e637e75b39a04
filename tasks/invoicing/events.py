"""After finalization: Prefect events for finalized invoices (for automations), summarised
past a cap. Their PDFs are made by the ``invoice-pdfs`` flow (``tasks/invoicing/pdfs.py``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from prefect import task
from prefect.events import emit_event
from sqlalchemy import Engine, text

from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.runs import transient_retries

MAX_INVOICE_EVENTS: Final = 100


@dataclass
class PendingInvoiceEvents:
    events: list[dict[str, Any]]
    more: int
    more_total_cents: dict[str, int]
    ids: list[int]


def pending_invoice_events(engine: Engine, limit: int = MAX_INVOICE_EVENTS) -> PendingInvoiceEvents:
    """Finalized invoices not announced yet: one event each up to ``limit``, the rest counted
    for one summary event (as wallet alerts are)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """
            select v.id, v.lago_id, v.number, v.currency, v.total_amount_cents,
                   v.prepaid_credit_amount_cents, v.issuing_date, c.external_id
            from invoices v join customers c on c.id = v.customer_id
            where v.status = 'finalized' and v.emitted_at is null
            order by v.id
            """)).all()
    events = [{
        "event": "tallyflow.invoice.finalized",
        "resource": {"prefect.resource.id": f"tallyflow.invoice.{r.lago_id}",
                     "prefect.resource.name": r.number,
                     "tallyflow.customer": r.external_id},
        "payload": {"number": r.number, "issuing_date": r.issuing_date.isoformat(),
                    "currency": r.currency, "total_amount_cents": int(r.total_amount_cents),
                    "prepaid_credit_amount_cents": int(r.prepaid_credit_amount_cents)},
    } for r in rows[:limit]]
    totals: dict[str, int] = defaultdict(int)
    for r in rows[limit:]:
        totals[r.currency] += int(r.total_amount_cents)
    return PendingInvoiceEvents(events, max(0, len(rows) - limit), dict(totals),
                                [r.id for r in rows])


def mark_invoice_events_emitted(engine: Engine, ids: Sequence[int]) -> None:
    with engine.begin() as conn:
        conn.execute(text("update invoices set emitted_at = now()"
                          " where id = any(cast(:ids as bigint[])) and emitted_at is null"),
                     {"ids": list(ids)})


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
