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
from tallyflow.tasks.usage import capture_time, rated_usage
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
                " last_processed_at = :at, updated_at = now(), evaluated_at = now()"
                " where id = :id"),
                {"v": current, "p": usage.period.from_datetime, "at": at, "id": row.id})
    return triggered


# What may have moved a subscription's alert values since ``:since`` (docs/architecture.md
# §24): events loaded (current usage counts them before any fold), voids, the catalog behind
# it, a new or edited alert, a period that ended (a new period starts again from 0), and what
# moves lifetime usage (§20): its historical part, invoices finalized or voided.
_CHANGED = text(
    """
    select distinct sub from (
      select a.subscription_external_id as sub from usage_alerts a
      where a.deleted_at is null
        and (a.evaluated_at is null or a.updated_at > a.evaluated_at)  -- new, or edited
      union all
      select e.external_subscription_id from events e
      where e.object_id in (select o.id from ingest_objects o where o.ingested_at >= :since)
      union all
      select v.external_subscription_id from event_voids v where v.created_at >= :since
      union all
      select s.external_id from subscriptions s
        join plans p on p.id = s.plan_id join customers c on c.id = s.customer_id
      where s.updated_at >= :since or s.created_at >= :since or p.updated_at >= :since
         or c.updated_at >= :since
         or s.plan_id in (select ch.plan_id from charges ch
                          join billable_metrics m on m.id = ch.billable_metric_id
                          where ch.effective_from >= :since or ch.effective_to >= :since
                             or m.updated_at >= :since)
      union all
      select s.external_id from change_set_bounds b join subscriptions s
        on s.id = b.subscription_id
      where b.next_boundary <= :at
      union all  -- lifetime usage (§20): historical usage set, invoices finalized or voided
      select l.external_subscription_id from lifetime_usages l
      where l.updated_at >= :since or l.created_at >= :since
      union all
      select s.external_id from invoice_subscriptions i
        join invoices v on v.id = i.invoice_id join subscriptions s on s.id = i.subscription_id
      where v.finalized_at >= :since or v.voided_at >= :since
    ) x
    where sub = any(cast(:subs as text[]))
    """
)


def changed_subscriptions(
    conn: Connection, subs: Sequence[str], at: datetime
) -> tuple[list[str], datetime]:
    """Of ``subs`` (with live alerts), those whose values may have changed since the last
    pass that failed nowhere (all of them before the first), and this pass's start."""
    captured = capture_time(conn)
    since = conn.execute(text("select captured_at from alert_evaluations where id = 1")).scalar()
    if since is None:
        return list(subs), captured
    found = set(conn.execute(_CHANGED, {"since": since, "at": at, "subs": list(subs)})
                .scalars())
    return [s for s in subs if s in found], captured


def evaluate_alerts(engine: Engine, at: datetime,
                    only: Sequence[str] | None = None) -> AlertRun:
    """Evaluate the alerts of every subscription that has one and may have changed since the
    last pass (or of ``only``, changed or not), each subscription contained: one that fails
    is reported and the others go on."""
    run = AlertRun()
    captured: datetime | None = None
    with engine.connect() as conn:
        subs = list(conn.execute(_LIVE, {"only": None if only is None else list(only)})
                    .scalars())
        if only is None and subs:
            subs, captured = changed_subscriptions(conn, subs, at)
    for external_id in subs:
        run.subscriptions += 1
        try:
            run.triggered += evaluate_subscription(engine, external_id, at)
        except Exception as exc:
            if not containable(exc):
                raise
            run.failed.append((external_id, f"{type(exc).__name__}: {exc}"))
    if captured is not None and not run.failed:  # a failed one is looked at again next pass
        with engine.begin() as conn:
            conn.execute(text(
                "insert into alert_evaluations (id, captured_at) values (1, :t)"
                " on conflict (id) do update set captured_at = excluded.captured_at"
                " where alert_evaluations.captured_at < excluded.captured_at"), {"t": captured})
    return run
