"""Lago event bodies -> checked events, and the JSON Lines they are stored as.

Every event is checked by the ingest's own rule (``models.events.validate_record``), so an event
the API accepts is one the ingest loads, and one it refuses (422) is one the ingest would have
rejected. What is stored is the event as sent, minus null fields: a missing ``timestamp`` stays
missing (the ingest then uses the object's write time, and a retried copy is a plain duplicate,
not a conflict).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from tallyflow.api.schemas import LagoEvent
from tallyflow.models.events import Reason, Rejection, TimeBounds, validate_record
from tallyflow.tasks.ingest import loads_exact

# Lago's event fields (its request model). external_customer_id is checked against the
# subscription's customer (tallyflow.api.routers.events), never taken on trust nor ignored.
FIELDS = tuple(LagoEvent.model_fields)
_STORED = FIELDS[:-1]
# Lago's error codes where it has one for the same fault; otherwise the ingest's reason code.
_LAGO_CODES: dict[str, str] = {
    Reason.MISSING_FIELD: "value_is_mandatory", Reason.EMPTY_VALUE: "value_is_mandatory",
    Reason.INVALID_TIMESTAMP: "invalid_format",
}
_EVENT_IDS = uuid.UUID("6f1e3a52-6c1b-4a8e-9a57-2f3b8d0c7e11")
_EVENT_IDS_BYTES = _EVENT_IDS.bytes


def lago_id(external_subscription_id: str, transaction_id: str) -> str:
    """``uuid5(_EVENT_IDS, "<subscription>\\x00<transaction>")`` as text, without building
    ``uuid.UUID`` objects (a third of an answer's cost per event in a batch of 100)."""
    name = f"{external_subscription_id}\x00{transaction_id}".encode()
    digest = bytearray(hashlib.sha1(_EVENT_IDS_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=256)
def _utc_text(moment: datetime) -> str:
    """A batch's events share their receipt time (and often their timestamp): once each."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class CheckedEvent:
    line: bytes  # the JSON Lines record stored in the object
    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp: datetime | None  # None: not given (the object's write time applies)
    properties: str  # JSON text
    precise: Decimal | None
    external_customer_id: str | None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def _big_ints(value: Any) -> Any:
    if type(value) is int:
        return Decimal(value) if not -(2**63) <= value < 2**64 else value
    if type(value) is dict:
        return {k: _big_ints(v) for k, v in value.items()}
    if type(value) is list:
        return [_big_ints(v) for v in value]
    return value


def _dump(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, default=_json_default)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_big_ints(record), default=_json_default)


def check_event(record: Any, now: datetime) -> CheckedEvent | dict[str, list[str]]:
    """One Lago event -> a stored line, or Lago's ``{field: [error code]}``."""
    if not isinstance(record, dict):
        return {"event": ["invalid_type"]}
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        return {name: ["unknown_field"] for name in unknown}
    customer = record.get("external_customer_id")
    if customer is not None and not isinstance(customer, str):
        return {"external_customer_id": ["invalid_type"]}
    bounds = TimeBounds(written_at=now)
    valid = validate_record(record, bounds)
    if isinstance(valid, Rejection):
        return {valid.field or "event": [_LAGO_CODES.get(str(valid.reason), str(valid.reason))]}
    txn, sub, code, timestamp, properties, precise = valid
    stored = {name: record[name] for name in _STORED if record.get(name) is not None}
    return CheckedEvent(
        line=_dump(stored) + b"\n", transaction_id=txn, external_subscription_id=sub, code=code,
        timestamp=None if record.get("timestamp") is None else timestamp,
        properties=properties, precise=precise, external_customer_id=customer,
    )


def event_object(event: CheckedEvent, written_at: datetime, received_at: datetime,
                 lago_subscription_id: str | None = None,
                 lago_customer_id: str | None = None) -> dict[str, Any]:
    """Lago's event object, as POST /events answers it."""
    moment = event.timestamp or written_at
    return {
        "lago_id": lago_id(event.external_subscription_id, event.transaction_id),
        "transaction_id": event.transaction_id,
        "lago_customer_id": lago_customer_id,
        "external_customer_id": event.external_customer_id,
        "code": event.code,
        "timestamp": _utc_text(moment),
        "precise_total_amount_cents": (None if event.precise is None
                                       else format(event.precise, "f")),
        "properties": loads_exact(event.properties),
        "lago_subscription_id": lago_subscription_id,
        "external_subscription_id": event.external_subscription_id,
        "created_at": _utc_text(received_at),
    }
