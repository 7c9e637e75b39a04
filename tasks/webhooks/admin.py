"""Endpoints and the delivery log: what the CLI (`tallyflow webhooks`) and the API
(`/api/v1/webhook_endpoints`) manage and read.

Lago's rules (lago-api ``app/models/webhook_endpoint.rb``, ``app/services/webhook_endpoints/``,
``app/services/webhooks/retry_service.rb``): at most ten endpoints, a URL once, event types
checked against the known ones; a removed endpoint's undelivered webhooks are not sent (Lago
deletes them; Tallyflow keeps them, ``failed``, for the log); a succeeded webhook is not
redelivered (``is_succeeded``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.models.lago.resources import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tallyflow.models.lago.times import iso
from tallyflow.models.webhooks import MAX_ENDPOINTS, endpoint_errors, normalize_event_types
from tallyflow.tasks.webhooks.outbox import Signing, signing


class WebhookError(UserError):
    """A refused endpoint change or redelivery: ``errors`` in Lago's 422 shape
    (``{field: [code]}``), or ``status`` 404 for an unknown id."""

    def __init__(self, message: str, hint: str | None = None, *,
                 errors: Mapping[str, list[str]] | None = None, status: int = 422,
                 code: str | None = None) -> None:
        super().__init__(message, hint)
        self.errors = dict(errors or {})
        self.status = status
        self.code = code


_ENDPOINT_COLUMNS = ("select id, lago_id, webhook_url, signature_algo, name,"
                     " event_types, created_at from webhook_endpoints")


def endpoint_object(row: Any, organization_id: str) -> WebhookEndpoint:
    """Lago's ``V1::WebhookEndpointSerializer``."""
    return {
        "lago_id": row.lago_id,
        "lago_organization_id": organization_id,
        "webhook_url": row.webhook_url,
        "signature_algo": row.signature_algo,
        "name": row.name,
        "event_types": row.event_types,
        "created_at": iso(row.created_at),
    }


def _refuse(errors: Mapping[str, list[str]]) -> WebhookError:
    said = "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items())
    return WebhookError(f"webhook endpoint refused ({said})",
                        "see docs/webhooks.md for the accepted fields and event types",
                        errors=errors)


def add_endpoint(engine: Engine, fields: Mapping[str, Any]) -> WebhookEndpoint:
    """Add an endpoint (Lago's ``WebhookEndpoints::CreateService``); the organization's key
    is made with the first one."""
    errors = endpoint_errors(fields, creating=True)
    if errors:
        raise _refuse(errors)
    with engine.begin() as conn:
        conn.execute(text("lock table webhook_endpoints in share row exclusive mode"))
        live = conn.execute(text("select count(*) from webhook_endpoints"
                                 " where removed_at is null")).scalar_one()
        if live >= MAX_ENDPOINTS:
            raise _refuse({"base": ["exceeded_limit"]})
        _url_free(conn, fields["webhook_url"], None)
        org = signing(conn)
        row = conn.execute(text(
            "insert into webhook_endpoints (lago_id, webhook_url, name, event_types)"
            " values (:l, :u, :n, cast(:t as jsonb))"
            " returning id, lago_id, webhook_url, signature_algo, name, event_types,"
            " created_at"),
            {"l": str(uuid.uuid4()), "u": fields["webhook_url"], "n": fields.get("name"),
             "t": _types_json(fields.get("event_types"))}).one()
    return endpoint_object(row, org.organization_id)


def update_endpoint(engine: Engine, lago_id: str, fields: Mapping[str, Any]) -> WebhookEndpoint:
    """Change the given fields of a live endpoint (Lago's ``UpdateService``)."""
    errors = endpoint_errors(fields, creating=False)
    if errors:
        raise _refuse(errors)
    with engine.begin() as conn:
        row = _live(conn, lago_id, lock=True)
        if "webhook_url" in fields:
            _url_free(conn, fields["webhook_url"], row.id)
        sets = {"webhook_url": fields.get("webhook_url", row.webhook_url),
                "name": fields.get("name", row.name),
                "event_types": (_types_json(fields["event_types"]) if "event_types" in fields
                                else _types_json(row.event_types))}
        row = conn.execute(text(
            "update webhook_endpoints set webhook_url = :webhook_url, name = :name,"
            " event_types = cast(:event_types as jsonb), updated_at = now() where id = :id"
            " returning id, lago_id, webhook_url, signature_algo, name, event_types,"
            " created_at"), {**sets, "id": row.id}).one()
        org = signing(conn)
    return endpoint_object(row, org.organization_id)


def remove_endpoint(engine: Engine, lago_id: str) -> WebhookEndpoint:
    """Remove a live endpoint; its undelivered webhooks end ``failed`` (kept for the log)."""
    with engine.begin() as conn:
        row = _live(conn, lago_id, lock=True)
        conn.execute(text("update webhook_endpoints set removed_at = now(), updated_at = now()"
                          " where id = :id"), {"id": row.id})
        conn.execute(text(
            "update webhooks set status = 'failed', last_error = 'endpoint removed',"
            " updated_at = now() where endpoint_id = :id and status in ('pending', 'retrying')"),
            {"id": row.id})
        org = signing(conn)
    return endpoint_object(row, org.organization_id)


def get_endpoint(engine: Engine, lago_id: str) -> WebhookEndpoint:
    with engine.connect() as conn:
        row = _live(conn, lago_id, lock=False)
        return endpoint_object(row, _organization(conn))


def list_endpoints(engine: Engine, page: int = 1,
                   per_page: int = 100) -> tuple[list[WebhookEndpoint], int]:
    """One page of the live endpoints, oldest first, and how many there are."""
    with engine.connect() as conn:
        total = int(conn.execute(text("select count(*) from webhook_endpoints"
                                      " where removed_at is null")).scalar_one())
        rows = conn.execute(text(_ENDPOINT_COLUMNS + " where removed_at is null order by id"
                                 " limit :n offset :o"),
                            {"n": per_page, "o": (page - 1) * per_page}).all()
        org = _organization(conn)
    return [endpoint_object(r, org) for r in rows], total


def signing_key(engine: Engine) -> Signing:
    """The organization's id and HMAC key (made now if no endpoint made them yet)."""
    with engine.begin() as conn:
        return signing(conn)


def _organization(conn: Connection) -> str:
    found = conn.execute(text("select organization_id from webhook_signing")).scalar()
    return str(found) if found is not None else ""


def _live(conn: Connection, lago_id: str, *, lock: bool) -> Any:
    row = conn.execute(text(_ENDPOINT_COLUMNS + " where lago_id = :l and removed_at is null"
                            + (" for update" if lock else "")), {"l": lago_id}).first()
    if row is None:
        raise WebhookError(f"unknown webhook endpoint {lago_id!r}",
                           "tallyflow webhooks endpoints list shows them", status=404,
                           code="webhook_endpoint_not_found")
    return row


def _url_free(conn: Connection, url: str, own_id: int | None) -> None:
    taken = conn.execute(text("select id from webhook_endpoints where webhook_url = :u"
                              " and removed_at is null"), {"u": url}).scalar()
    if taken is not None and taken != own_id:
        raise _refuse({"webhook_url": ["value_already_exist"]})


def _types_json(value: Any) -> str | None:
    import json

    normalized = normalize_event_types(value)
    return None if normalized is None else json.dumps(normalized)


# ----------------------------------------------------------------------------- delivery log

_WEBHOOK_COLUMNS = """
    select w.id, w.lago_id, w.webhook_type, w.object_type, w.object_id, w.status, w.attempts,
           w.next_attempt_at, w.last_attempt_at, w.http_status, w.last_error, w.delivered_at,
           w.created_at, e.webhook_url, e.lago_id as endpoint_lago_id
    from webhooks w join webhook_endpoints e on e.id = w.endpoint_id
"""


def list_webhooks(engine: Engine, status: str | None = None,
                  limit: int = 50) -> list[WebhookDelivery]:
    """The newest webhooks (optionally of one status) with their delivery state."""
    with engine.connect() as conn:
        rows = conn.execute(text(_WEBHOOK_COLUMNS + " where (cast(:s as text) is null"
                                 " or w.status = :s) order by w.id desc limit :n"),
                            {"s": status, "n": limit}).all()
    return [_webhook_json(r) for r in rows]


def webhook_attempts(engine: Engine,
                     lago_id: str) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """One webhook and every attempt to deliver it, oldest first."""
    with engine.connect() as conn:
        row = conn.execute(text(_WEBHOOK_COLUMNS + " where w.lago_id = :l"),
                           {"l": lago_id}).first()
        if row is None:
            raise _unknown_webhook(lago_id)
        attempts = conn.execute(text(
            "select attempt, started_at, milliseconds, http_status, error, response"
            " from webhook_attempts where webhook_id = :id order by attempt"),
            {"id": row.id}).all()
    return _webhook_json(row), [{
        "attempt": a.attempt, "started_at": iso(a.started_at), "milliseconds": a.milliseconds,
        "http_status": a.http_status, "error": a.error, "response": a.response,
    } for a in attempts]


def requeue(engine: Engine, lago_id: str) -> None:
    """Make a webhook due now for one more attempt (Lago's ``Webhooks::RetryService``: a
    succeeded one is refused; a dead one gets one attempt, and is dead again if it fails)."""
    with engine.begin() as conn:
        row = conn.execute(text(
            "select w.id, w.status, e.removed_at from webhooks w"
            " join webhook_endpoints e on e.id = w.endpoint_id where w.lago_id = :l"
            " for update of w"), {"l": lago_id}).first()
        if row is None:
            raise _unknown_webhook(lago_id)
        if row.status == "succeeded":
            raise WebhookError(f"webhook {lago_id} was delivered already",
                               "a receiver that lost it can ask by its X-Lago-Unique-Key",
                               status=405, code="is_succeeded")
        if row.removed_at is not None:
            raise WebhookError(f"webhook {lago_id}'s endpoint was removed",
                               "add the endpoint again; new webhooks will go to it",
                               status=405, code="endpoint_removed")
        conn.execute(text("update webhooks set status = case when status = 'failed'"
                          " then 'retrying' else status end, next_attempt_at = now(),"
                          " updated_at = now() where id = :id"), {"id": row.id})


def _unknown_webhook(lago_id: str) -> WebhookError:
    return WebhookError(f"unknown webhook {lago_id!r}",
                        "tallyflow webhooks deliveries lists them", status=404,
                        code="webhook_not_found")


def _webhook_json(r: Any) -> WebhookDelivery:
    return {
        "lago_id": r.lago_id, "webhook_type": r.webhook_type, "object_type": r.object_type,
        "object_id": r.object_id, "status": r.status, "attempts": r.attempts,
        "http_status": r.http_status, "last_error": r.last_error,
        "endpoint": r.webhook_url, "lago_webhook_endpoint_id": r.endpoint_lago_id,
        "created_at": iso(r.created_at), "last_attempt_at": iso(r.last_attempt_at),
        "next_attempt_at": (iso(r.next_attempt_at)
                            if r.status in ("pending", "retrying") else None),
        "delivered_at": iso(r.delivered_at),
    }
