"""``subscription.terminated`` by webhook, in the transaction that marks the row terminated
(docs/architecture.md §17; lago-api ``app/services/webhooks/subscriptions/terminated_service.rb``):
a termination now, an upgrade's old row, and an end reached later (a scheduled termination,
``ending_at``), which ``final_snapshots`` marks. Keyed per row, so one row is announced once
whichever of them marks it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from tallyflow.models.lago.times import iso
from tallyflow.tasks.webhooks import enqueue, subscribed

_ROWS = text(
    """
    select s.id, s.external_id, s.name, s.billing_time, s.subscription_at, s.started_at,
           s.ending_at, s.terminated_at, s.status, s.customer_id, s.previous_subscription_id,
           c.external_id as customer_external_id, p.code as plan_code
    from subscriptions s join customers c on c.id = s.customer_id
    join plans p on p.id = s.plan_id
    where s.id = any(cast(:ids as bigint[])) order by s.id
    """
)


def announce_terminated(conn: Connection, subscription_ids: Sequence[int]) -> None:
    """Enqueue ``subscription.terminated`` for these rows (nothing read without an endpoint
    taking it)."""
    if not subscription_ids or not subscribed(conn, "subscription.terminated"):
        return
    for s in conn.execute(_ROWS, {"ids": list(subscription_ids)}):
        payload = {
            "lago_id": str(s.id), "external_id": s.external_id, "name": s.name,
            "lago_customer_id": str(s.customer_id),
            "external_customer_id": s.customer_external_id, "plan_code": s.plan_code,
            "status": "terminated", "billing_time": s.billing_time,
            "subscription_at": iso(s.subscription_at),
            "started_at": iso(s.started_at or s.subscription_at),
            "ending_at": iso(s.ending_at), "terminated_at": iso(s.terminated_at or s.ending_at),
            "canceled_at": None,
            "previous_plan_code": None, "next_plan_code": None,
        }
        enqueue(conn, "subscription.terminated", "subscription", payload,
                key=f"subscription.terminated:{s.id}")
