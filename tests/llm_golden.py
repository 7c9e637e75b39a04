"""The outcome of a mapping's golden records without a database: mapped, validated and
deduplicated the way ingestion does (same sub-index, same first-copy-wins rule), so the golden
fixtures are checked in a millisecond here and against Postgres by the conformance suite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from tallyflow.models.events import Rejection, TimeBounds, validate_record
from tallyflow.models.mappings import Events, Mapping

WRITTEN = datetime(2025, 11, 24, 16, 30, tzinfo=UTC)


def outcome(mapping: Mapping, lines: list[str], options: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    bounds = TimeBounds(written_at=WRITTEN)
    chosen = mapping.options(options or {})
    events: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    unmapped: dict[str, int] = {}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    duplicates = 0
    for row, line in enumerate(lines, start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            rejects.append({"row": row, "reason": "invalid_json", "field": None})
            continue
        mapped = mapping.map(record, chosen)
        if isinstance(mapped, Rejection):
            rejects.append({"row": row, "reason": str(mapped.reason), "field": mapped.field})
            continue
        many = list(mapped) if type(mapped) is Events else [mapped]
        for name in getattr(mapped, "unmapped", ()):
            unmapped[name] = unmapped.get(name, 0) + 1
        valid = [validate_record(event, bounds) for event in many]
        bad = next((v for v in valid if isinstance(v, Rejection)), None)
        if bad is not None:
            rejects.append({"row": row, "reason": str(bad.reason), "field": bad.field})
            continue
        for sub, checked in enumerate(valid):
            assert not isinstance(checked, Rejection)
            txn, subscriber, code, stamp, properties, _ = checked
            event = {"row": row, "sub": sub, "transaction_id": txn,
                     "external_subscription_id": subscriber, "code": code,
                     "timestamp": stamp.isoformat(), "properties": orjson.loads(properties)}
            kept = seen.get((subscriber, txn))
            if kept is None:
                seen[(subscriber, txn)] = event
                events.append(event)
            elif {k: kept[k] for k in ("code", "timestamp", "properties")} == {
                    k: event[k] for k in ("code", "timestamp", "properties")}:
                duplicates += 1
            else:
                rejects.append({"row": row, "reason": "conflicting_duplicate", "field": None})
    return {"events": events, "duplicates": duplicates, "rejects": rejects,
            "unmapped_usage_fields": unmapped}
