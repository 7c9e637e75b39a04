"""Webhooks, the pure part: which types exist, the envelope, the signature, the backoff and
what an endpoint may say (docs/architecture.md §17).

Lago's rules, followed so that a receiver written for Lago verifies Tallyflow's webhooks
unchanged:

- the envelope (lago-api ``app/services/webhooks/base_service.rb``): ``webhook_type``,
  ``object_type``, ``organization_id`` and the object under the key named by ``object_type``;
- the ``hmac`` signature (``app/models/webhook.rb``, ``hmac_signature``):
  ``X-Lago-Signature`` = Base64(HMAC-SHA256(organization key, body)),
  ``X-Lago-Signature-Algorithm: hmac``, ``X-Lago-Unique-Key`` = the webhook's id, the same on
  every attempt, so a receiver counts a logical event once by it;
- the endpoint (``app/models/webhook_endpoint.rb``): an http(s) URL unique per organization, at
  most ``MAX_ENDPOINTS``, ``event_types`` null (every type) or a list of known types, ``["*"]``
  meaning null.

No I/O here; ``tallyflow.tasks.webhooks`` writes the outbox and delivers it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from tallyflow.models import number_rule

# The types Tallyflow emits, each with the Lago object it carries. ``alert.triggered``
# carries a ``triggered_alert`` (lago-api app/services/webhooks/usage_monitoring/
# alert_triggered_service.rb; usage alerts, docs/architecture.md §18).
WEBHOOK_TYPES: Final[Mapping[str, str]] = {
    "invoice.created": "invoice",
    "invoice.payment_status_updated": "invoice",
    "invoice.voided": "invoice",
    "credit_note.created": "credit_note",
    "wallet_transaction.created": "wallet_transaction",
    "wallet.depleted_ongoing_balance": "wallet",
    "alert.triggered": "triggered_alert",
    "subscription.terminated": "subscription",
    "event.error": "event_error",
}

SIGNATURE_ALGO: Final = "hmac"
# Lago also signs with ``jwt`` (RS256 with Lago's own private key); Tallyflow does not, so an
# endpoint asking for it is refused by name rather than signed another way.
REFUSED_ALGOS: Final = frozenset({"jwt"})
MAX_ENDPOINTS: Final = 10  # Lago's WebhookEndpoint::LIMIT
STATUSES: Final = ("pending", "retrying", "succeeded", "failed")


def envelope(webhook_type: str, organization_id: str, payload: Mapping[str, Any]) -> bytes:
    """The body as sent and signed: Lago's envelope around the object, as exact JSON bytes
    (numbers beyond 64 bits as strings, docs/architecture.md §7).

    The bytes are stored in the outbox and never rebuilt, so every attempt sends (and signs)
    the same body."""
    object_type = WEBHOOK_TYPES[webhook_type]
    body = {"webhook_type": webhook_type, "object_type": object_type,
            "organization_id": organization_id, object_type: dict(payload)}
    return number_rule.dumps(body, default=str, big="string")


def signature(key: str, body: bytes) -> str:
    """Lago's ``hmac`` signature: Base64 of HMAC-SHA256 of the body with the organization's
    key."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def headers(key: str, body: bytes, webhook_id: str) -> dict[str, str]:
    """The headers of one delivery (``Webhook#generate_headers``)."""
    return {
        "Content-Type": "application/json",
        "X-Lago-Signature": signature(key, body),
        "X-Lago-Signature-Algorithm": SIGNATURE_ALGO,
        "X-Lago-Unique-Key": webhook_id,
    }


def backoff(attempts: int, base_seconds: float = 30.0,
            cap_seconds: float = 6 * 3600.0) -> timedelta:
    """How long after its ``attempts``-th failed attempt a webhook is tried again: doubling
    from ``base_seconds`` (30 s, 1 min, 2 min, ...), never more than ``cap_seconds``.

    Deterministic (no jitter): the outbox is claimed with SKIP LOCKED by time, so concurrent
    deliverers never send the same row at once, and tests can name the moment of the next
    attempt."""
    if attempts < 1:
        return timedelta(0)
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** (attempts - 1)))


def endpoint_errors(fields: Mapping[str, Any], *, creating: bool) -> dict[str, list[str]]:
    """Lago's validation of a webhook endpoint's fields, as 422 ``{field: [code]}``.

    ``fields`` holds what the caller gave (``webhook_url``, ``signature_algo``, ``name``,
    ``event_types``); a field absent is not checked unless it is required on creation."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(fields) - {"webhook_url", "signature_algo", "name", "event_types"})
    for name in unknown:
        errors[name] = ["unknown_field"]
    if "webhook_url" in fields or creating:
        url = fields.get("webhook_url")
        if not isinstance(url, str) or not url:
            errors["webhook_url"] = ["value_is_mandatory"]
        elif not _is_url(url):
            errors["webhook_url"] = ["url_invalid"]
    algo = fields.get("signature_algo")
    if algo is not None and algo != SIGNATURE_ALGO:
        errors["signature_algo"] = (["unsupported_value"] if algo in REFUSED_ALGOS
                                    else ["value_is_invalid"])
    given_name = fields.get("name")
    if given_name is not None and not isinstance(given_name, str):
        errors["name"] = ["invalid_type"]
    if "event_types" in fields:
        problem = _event_types_error(fields["event_types"])
        if problem:
            errors["event_types"] = [problem]
    return errors


def normalize_event_types(value: Sequence[str] | None) -> list[str] | None:
    """Lago's normalisation: lower-cased, stripped, blanks dropped, duplicates dropped;
    ``["*"]`` and null mean every type (stored as null)."""
    if value is None:
        return None
    out: list[str] = []
    for item in value:
        text = item.strip().lower()
        if text and text not in out:
            out.append(text)
    return None if out == ["*"] else out


def _event_types_error(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must_be_array"
    normalized = normalize_event_types(value)
    if normalized is None:
        return None
    return "invalid_types" if set(normalized) - set(WEBHOOK_TYPES) else None


def _is_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. a bracketed host that is not an IPv6 address
        return False
