"""Usage alerts as catalog objects: created, read, updated and deleted per subscription, and
the alerts they triggered (docs/architecture.md §18; lago-api
``app/services/usage_monitoring/create_alert_service.rb``, ``update_alert_service.rb``,
``destroy_alert_service.rb``, ``app/serializers/v1/usage_monitoring/alert_serializer.rb``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.models.alerts import AlertError, AlertSpec, Threshold, check_alert, decimal_text
from tallyflow.models.lago.resources import AlertMetric, TriggeredAlert, UsageAlert
from tallyflow.models.lago.times import iso_z


class AlertNotFound(LookupError):
    """No live alert (or subscription) under that name: Lago's 404."""


_ALERTS = text(
    """
    select a.id, a.lago_id, a.subscription_external_id, a.alert_type, a.code, a.name,
           a.previous_value, a.last_processed_at, a.created_at, a.billable_metric_id,
           m.code as metric_code, m.name as metric_name,
           (select organization_id from webhook_signing where id = 1) as organization
    from usage_alerts a left join billable_metrics m on m.id = a.billable_metric_id
    where a.subscription_external_id = :sub and a.deleted_at is null
      and (cast(:code as text) is null or a.code = :code)
    order by a.id
    """
)
_THRESHOLDS = text(
    "select alert_id, code, value, recurring from usage_alert_thresholds"
    " where alert_id = any(cast(:ids as bigint[])) order by alert_id, recurring, value, id"
)


def thresholds_of(conn: Connection, ids: list[int]) -> dict[int, list[Threshold]]:
    out: dict[int, list[Threshold]] = {i: [] for i in ids}
    for r in conn.execute(_THRESHOLDS, {"ids": ids}):
        out[r.alert_id].append(Threshold(r.code, r.value, r.recurring))
    return out


def alert_object(row: Any, thresholds: list[Threshold]) -> UsageAlert:
    """Lago's alert (``V1::UsageMonitoring::AlertSerializer``)."""
    metric: AlertMetric | None = None if row.metric_code is None else {
        "lago_id": str(row.billable_metric_id), "code": row.metric_code, "name": row.metric_name}
    return {
        "lago_id": row.lago_id,
        "lago_organization_id": row.organization,
        "subscription_external_id": row.subscription_external_id,
        "external_subscription_id": row.subscription_external_id,
        "lago_wallet_id": None,
        "wallet_code": None,
        "alert_type": row.alert_type,
        "code": row.code,
        "name": row.name,
        "direction": "increasing",
        "previous_value": decimal_text(row.previous_value),
        "last_processed_at": iso_z(row.last_processed_at),
        "thresholds": [t.as_lago() for t in thresholds],
        "created_at": iso_z(row.created_at),
        "billable_metric": metric,
    }


def list_alerts(engine: Engine, external_subscription_id: str,
                code: str | None = None) -> list[UsageAlert]:
    with engine.connect() as conn:
        rows = list(conn.execute(_ALERTS, {"sub": external_subscription_id, "code": code}))
        thresholds = thresholds_of(conn, [r.id for r in rows])
    return [alert_object(r, thresholds[r.id]) for r in rows]


def get_alert(engine: Engine, external_subscription_id: str, code: str) -> UsageAlert:
    found = list_alerts(engine, external_subscription_id, code)
    if not found:
        raise AlertNotFound("alert_not_found")
    return found[0]


def _subscription_exists(conn: Connection, external_id: str) -> None:
    if conn.execute(text("select 1 from subscriptions where external_id = :e limit 1"),
                    {"e": external_id}).first() is None:
        raise AlertNotFound("subscription_not_found")


def _metric_id(conn: Connection, code: str | None) -> int | None:
    if code is None:
        return None
    found = conn.execute(text("select id from billable_metrics where code = :c"),
                         {"c": code}).scalar()
    if found is None:
        raise AlertNotFound("billable_metric_not_found")
    return int(found)


def _write_thresholds(conn: Connection, alert_id: int, spec: AlertSpec) -> None:
    conn.execute(text("delete from usage_alert_thresholds where alert_id = :a"), {"a": alert_id})
    conn.execute(
        text("insert into usage_alert_thresholds (alert_id, code, value, recurring)"
             " values (:a, :code, :value, :recurring)"),
        [{"a": alert_id, "code": t.code, "value": t.value, "recurring": t.recurring}
         for t in spec.thresholds])


def _refuse_taken(conn: Connection, sub: str, spec: AlertSpec, metric: int | None,
                  other_than: int | None = None) -> None:
    taken = conn.execute(text(
        """
        select code = :code as same_code from usage_alerts
        where subscription_external_id = :sub and deleted_at is null
          and id is distinct from :other
          and (code = :code or (alert_type = :type
               and billable_metric_id is not distinct from :metric))
        """), {"sub": sub, "code": spec.code, "type": spec.alert_type, "metric": metric,
               "other": other_than}).first()
    if taken is not None:
        # Lago: code "value_already_exist" on the code, or the type already alerted on
        raise AlertError("code" if taken.same_code else "alert_type", "value_already_exist")


def create_alert(engine: Engine, external_subscription_id: str,
                 body: Mapping[str, Any]) -> UsageAlert:
    """Lago's ``CreateAlertService``: one alert of a subscription, its thresholds."""
    spec = check_alert(body)
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(hashtext('usage_alerts:' || :s))"),
                     {"s": external_subscription_id})
        _subscription_exists(conn, external_subscription_id)
        metric = _metric_id(conn, spec.billable_metric_code)
        _refuse_taken(conn, external_subscription_id, spec, metric)
        alert_id = conn.execute(text(
            """
            insert into usage_alerts (lago_id, subscription_external_id, alert_type, code, name,
                                      billable_metric_id)
            values (:lago_id, :sub, :type, :code, :name, :metric) returning id
            """), {"lago_id": str(uuid.uuid4()), "sub": external_subscription_id,
                   "type": spec.alert_type, "code": spec.code, "name": spec.name,
                   "metric": metric}).scalar_one()
        _write_thresholds(conn, int(alert_id), spec)
    return get_alert(engine, external_subscription_id, spec.code)


def update_alert(engine: Engine, external_subscription_id: str, code: str,
                 body: Mapping[str, Any]) -> UsageAlert:
    """Lago's ``UpdateAlertService``: code, name, thresholds and metric change; the type
    does not (refused by name). ``previous_value`` is kept."""
    current = get_alert(engine, external_subscription_id, code)
    if "alert_type" in body and body["alert_type"] != current["alert_type"]:
        raise AlertError("alert_type", "cannot_be_updated")
    merged = {"alert_type": current["alert_type"], "code": current["code"],
              "name": current["name"],
              "thresholds": body.get("thresholds", current["thresholds"]),
              **({"billable_metric_code": current["billable_metric"]["code"]}
                 if current["billable_metric"] else {}),
              **{k: v for k, v in body.items() if k != "thresholds"}}
    spec = check_alert(merged)
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(hashtext('usage_alerts:' || :s))"),
                     {"s": external_subscription_id})
        row = conn.execute(text(
            "select id from usage_alerts where lago_id = :l and deleted_at is null for update"),
            {"l": current["lago_id"]}).first()
        if row is None:
            raise AlertNotFound("alert_not_found")
        metric = _metric_id(conn, spec.billable_metric_code)
        _refuse_taken(conn, external_subscription_id, spec, metric, int(row.id))
        conn.execute(text("update usage_alerts set code = :code, name = :name,"
                          " billable_metric_id = :metric, updated_at = now() where id = :id"),
                     {"code": spec.code, "name": spec.name, "metric": metric, "id": row.id})
        _write_thresholds(conn, int(row.id), spec)
    return get_alert(engine, external_subscription_id, spec.code)


def delete_alert(engine: Engine, external_subscription_id: str, code: str) -> UsageAlert:
    """Lago's ``DestroyAlertService`` (a soft delete: its triggered alerts keep naming it)."""
    alert = get_alert(engine, external_subscription_id, code)
    with engine.begin() as conn:
        conn.execute(text("update usage_alerts set deleted_at = now(), updated_at = now()"
                          " where lago_id = :l and deleted_at is null"),
                     {"l": alert["lago_id"]})
    return alert


_TRIGGERED = text(
    """
    select t.lago_id, a.lago_id as alert_lago_id, t.subscription_id,
           a.subscription_external_id, c.external_id as customer, m.code as metric_code,
           a.name, a.code, a.alert_type, t.current_value, t.previous_value,
           t.crossed_thresholds::text as crossed, t.triggered_at,
           (select organization_id from webhook_signing where id = 1) as organization
    from triggered_alerts t
    join usage_alerts a on a.id = t.alert_id
    join subscriptions s on s.id = t.subscription_id
    join customers c on c.id = s.customer_id
    left join billable_metrics m on m.id = a.billable_metric_id
    where (cast(:sub as text) is null or a.subscription_external_id = :sub)
      and (cast(:lago_id as text) is null or t.lago_id = :lago_id)
    order by t.id
    """
)


def triggered_object(row: Any) -> TriggeredAlert:
    """Lago's triggered alert (``V1::UsageMonitoring::TriggeredAlertSerializer``): the object
    of the ``alert.triggered`` webhook."""
    return {
        "lago_id": row.lago_id,
        "lago_organization_id": row.organization,
        "lago_alert_id": row.alert_lago_id,
        "lago_subscription_id": str(row.subscription_id),
        "external_subscription_id": row.subscription_external_id,
        "lago_wallet_id": None,
        "external_customer_id": row.customer,
        "billable_metric_code": row.metric_code,
        "alert_name": row.name,
        "alert_code": row.code,
        "alert_type": row.alert_type,
        "current_value": decimal_text(row.current_value),
        "previous_value": decimal_text(row.previous_value),
        "crossed_thresholds": json.loads(row.crossed),
        "triggered_at": iso_z(row.triggered_at),
        "subscription_external_id": row.subscription_external_id,
        "customer_external_id": row.customer,
    }


def triggered_alerts(conn: Connection, external_subscription_id: str | None = None,
                     lago_id: str | None = None) -> list[TriggeredAlert]:
    rows = conn.execute(_TRIGGERED, {"sub": external_subscription_id, "lago_id": lago_id})
    return [triggered_object(r) for r in rows]
