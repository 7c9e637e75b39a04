"""The outbox: webhooks written in the transaction of the change they announce.

``enqueue`` is the one way in. Callers call it on their own connection, inside the transaction
that makes the change, so the webhook exists exactly when the change does: a rollback or a
crash before the commit leaves neither, a commit leaves both, and the deliverer
(``tallyflow.tasks.webhooks.delivery``) sends it at least once afterwards, however often it
dies. Nothing here does network I/O, so a slow or dead receiver never holds a billing
transaction (docs/architecture.md §17).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, text

from tallyflow.models.webhooks import WEBHOOK_TYPES, envelope


class Signing(NamedTuple):
    """The organization's id (the envelope's ``organization_id``) and its HMAC key."""

    organization_id: str
    hmac_key: str


_ENDPOINTS = text(
    """
    select id from webhook_endpoints
    where removed_at is null and (event_types is null or event_types ? :t)
    order by id
    """
)

_INSERT = text(
    """
    insert into webhooks (lago_id, endpoint_id, webhook_type, object_type, object_id,
      dedupe_key, body)
    select r.lago_id, r.endpoint, :type, :object_type, r.object_id, r.dedupe_key, r.body
    from unnest(cast(:lago_ids as text[]), cast(:endpoints as bigint[]),
                cast(:object_ids as text[]), cast(:keys as text[]), cast(:bodies as text[]))
      as r(lago_id, endpoint, object_id, dedupe_key, body)
    on conflict (endpoint_id, dedupe_key) do nothing
    """
)


def subscribed(conn: Connection, webhook_type: str) -> bool:
    """Whether any live endpoint takes this type: callers whose payload costs queries ask
    first, so billing without endpoints pays one indexed read of a tiny table."""
    return conn.execute(_ENDPOINTS, {"t": webhook_type}).first() is not None


def enqueue(
    conn: Connection, webhook_type: str, object_type: str, payload: Mapping[str, Any], *,
    key: str | None = None,
) -> int:
    """Write one webhook per live endpoint subscribed to ``webhook_type``, in the caller's
    transaction; returns how many were written (0, and nothing written, without endpoints).

    ``payload`` is the Lago object (``object_type`` names it, as Lago's envelope does).
    ``key`` names the logical event (``invoice.created:<lago_id>``): a rerun of the change
    that enqueues it again adds nothing, so a receiver is never sent two webhooks for one
    event with different ``X-Lago-Unique-Key``s.
    """
    return enqueue_many(conn, webhook_type, object_type, [(payload, key)])


def enqueue_many(
    conn: Connection, webhook_type: str, object_type: str,
    items: Sequence[tuple[Mapping[str, Any], str | None]],
) -> int:
    """``enqueue`` for many objects of one type in one statement (a ledger batch posts
    thousands of rows in one transaction)."""
    expected = WEBHOOK_TYPES.get(webhook_type)
    if expected is None:
        raise ValueError(f"unknown webhook type {webhook_type!r}")
    if object_type != expected:
        raise ValueError(f"{webhook_type} carries a {expected!r}, not {object_type!r}")
    endpoints = list(conn.execute(_ENDPOINTS, {"t": webhook_type}).scalars())
    if not endpoints or not items:
        return 0
    organization = signing(conn).organization_id
    rows = [(envelope(webhook_type, organization, payload).decode(), payload.get("lago_id"),
             key) for payload, key in items]
    params: dict[str, list[Any]] = {"lago_ids": [], "endpoints": [], "object_ids": [],
                                    "keys": [], "bodies": []}
    for endpoint in endpoints:
        for body, object_id, key in rows:
            params["lago_ids"].append(str(uuid.uuid4()))
            params["endpoints"].append(endpoint)
            params["object_ids"].append(None if object_id is None else str(object_id))
            params["keys"].append(key)
            params["bodies"].append(body)
    return int(conn.execute(_INSERT, {**params, "type": webhook_type,
                                      "object_type": object_type}).rowcount)


def signing(conn: Connection) -> Signing:
    """The organization's id and HMAC key, made once (concurrent first callers insert with
    ON CONFLICT DO NOTHING and all read the one row that won)."""
    read = text("select organization_id, hmac_key from webhook_signing where id = 1")
    row = conn.execute(read).first()
    if row is None:
        conn.execute(text(
            "insert into webhook_signing (id, organization_id, hmac_key) values (1, :o, :k)"
            " on conflict (id) do nothing"),
            {"o": str(uuid.uuid4()), "k": secrets.token_hex(32)})
        row = conn.execute(read).one()
    return Signing(row.organization_id, row.hmac_key)
