"""Usage alerts evaluated: each live alert's value read from the subscription's current usage
(the rating of ``tallyflow usage``), the thresholds crossed since the value it saw last
triggered once, with the ``alert.triggered`` webhook (docs/architecture.md §18; lago-api
``app/services/usage_monitoring/process_alert_service.rb``).

Exactly once. The alert row is locked (``for update``); the triggered alert, the webhook
(``enqueue``, keyed by the triggered alert) and the alert's new ``previous_value`` commit
together, so a rerun reads the value it already saw and crosses nothing, and a crash before
the commit leaves nothing. An evaluation that read usage at an older moment than the alert's
``last_processed_at`` changes nothing (two evaluators racing cannot move the value back).
A value that went down (a void, a credit note, a new period) is kept too: crossing the same
threshold again later triggers again, as Lago's rule does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.models.alerts import LIFETIME_TYPES, Threshold, alert_value, thresholds_crossed
from tallyflow.models.rating.pricing import SubscriptionUsage
from tallyflow.tasks.alerts.store import thresholds_of, triggered_alerts
from tallyflow.tasks.invoicing import lifetime_of
from tallyflow.tasks.runs import containable
from tallyflow.tasks.usage import rated_usage
from tallyflow.tasks.webhooks import enqueue


@dataclass
class AlertRun:
    """What one evaluation did: subscriptions evaluated, alerts triggered, failures held."""

    subscriptions: int = 0
    triggered: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (subscription, error)


_LIVE = text(
    "select distinct subscription_external_id from usage_alerts where deleted_at is null"
    " and (cast(:only as text[]) is null or subscription_external_id = any(cast(:only as text[])))"
    " order by 1"
)
_LOCK = text(
    """
    select id, alert_type, billable_metric_id, previous_value, period_from, last_processed_at
    from usage_alerts
    where subscription_external_id = :sub and deleted_at is null
    order by id for update
    """
)
_SUBSCRIPTION = text(
    "select id from subscriptions where external_id = :e"
    " order by (terminated_at is null) desc, id desc limit 1"
)


def _crossing(row: Any, usage: SubscriptionUsage, thresholds: list[Threshold],
              lifetime_cents: int | None = None,
              ) -> tuple[Decimal, Decimal, list[Threshold]] | None:
    """(previous, current, crossed) of one alert, or None when it watches nothing here."""
    current = alert_value(row.alert_type, row.billable_metric_id, usage, lifetime_cents)
    if current is None:
        return None
    # A new period's usage starts again from 0 (Lago's current usage does too); lifetime
    # usage does not.
    same_period = (row.period_from == usage.period.from_datetime
                   or row.alert_type in LIFETIME_TYPES)
    previous = row.previous_value if same_period else Decimal(0)
    return previous, current, thresholds_crossed(previous, current, thresholds)


def _trigger(conn: Connection, row: Any, sub_id: int, previous: Decimal, current: Decimal,
             crossed: list[Threshold], at: datetime) -> str:
    lago_id = str(uuid.uuid4())
    conn.execute(text(
        """
        insert into triggered_alerts (lago_id, alert_id, subscription_id, current_value,
                                      previous_value, crossed_thresholds, triggered_at)
        values (:lago_id, :alert, :sub, :current, :previous, cast(:crossed as jsonb), :at)
        """), {"lago_id": lago_id, "alert": row.id, "sub": sub_id, "current": current,
               "previous": previous, "at": at,
               "crossed": json.dumps([t.as_lago() for t in crossed])})
    payload = triggered_alerts(conn, lago_id=lago_id)[0]
    enqueue(conn, "alert.triggered", "triggered_alert", payload,
            key=f"alert.triggered:{lago_id}")
    return lago_id


def evaluate_subscription(engine: Engine, external_id: str, at: datetime) -> list[str]:
    """Evaluate every live alert of one subscription at ``at``; the triggered alerts' ids."""
    try:
        usage = rated_usage(engine, external_id, at)
    except (LookupError, ValueError):
        return []  # unknown, or not in force at ``at``: nothing to watch
    triggered: list[str] = []
    with engine.begin() as conn:
        rows = list(conn.execute(_LOCK, {"sub": external_id}))
        sub_id = conn.execute(_SUBSCRIPTION, {"e": external_id}).scalar_one()
        thresholds = thresholds_of(conn, [r.id for r in rows])
        lifetime = None
        if any(r.alert_type in LIFETIME_TYPES for r in rows):
            lifetime = lifetime_of(conn, external_id, usage.amount_cents).total_amount_cents
        for row in rows:
            if row.last_processed_at is not None and row.last_processed_at > at:
                continue  # a later evaluation already committed
            found = _crossing(row, usage, thresholds[row.id], lifetime)
            if found is None:
                continue
            previous, current, crossed = found
            if crossed:
                triggered.append(_trigger(conn, row, int(sub_id), previous, current, crossed,
                                          at))
            conn.execute(text(
                "update usage_alerts set previous_value = :v, period_from = :p,"
                " last_processed_at = :at, updated_at = now() where id = :id"),
                {"v": current, "p": usage.period.from_datetime, "at": at, "id": row.id})
    return triggered


def evaluate_alerts(engine: Engine, at: datetime,
                    only: Sequence[str] | None = None) -> AlertRun:
    """Evaluate the alerts of every subscription that has one (or of ``only``), each
    subscription contained: one that fails is reported and the others go on."""
    run = AlertRun()
    with engine.connect() as conn:
        subs = list(conn.execute(_LIVE, {"only": None if only is None else list(only)})
                    .scalars())
    for external_id in subs:
        run.subscriptions += 1
        try:
            run.triggered += evaluate_subscription(engine, external_id, at)
        except Exception as exc:
            if not containable(exc):
                raise
            run.failed.append((external_id, f"{type(exc).__name__}: {exc}"))
    return run
