"""Late usage: events for periods whose invoice is finalized.

Counted and listed, never billed there (as in Lago).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

_LATE = """
    from invoice_subscriptions i
    -- late for the invoice that first closed the period (a regenerated one copies its fees,
    -- docs/architecture.md §13), listed once whatever regenerations followed
    join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
      and i.regeneration = 0
    join subscriptions s on s.id = i.subscription_id
    join events e on e.external_subscription_id = s.external_id
      and e."timestamp" between i.from_datetime and i.to_datetime
      and e.ingested_at > v.finalized_at and e.voided_at is null
"""


def late_usage_count(conn: Connection) -> int:
    """Events that arrived after the invoice of their period was finalized (not billed)."""
    return int(conn.execute(text("select count(*)" + _LATE)).scalar_one())


def late_usage(engine: Engine, limit: int = 100) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            """select v.number, s.external_id as external_subscription_id, e.transaction_id,
                      e.code, e."timestamp", e.ingested_at, v.finalized_at"""
            + _LATE + """ order by e.ingested_at, e.id limit :limit"""), {"limit": limit})
        return [dict(r._mapping) for r in rows]
