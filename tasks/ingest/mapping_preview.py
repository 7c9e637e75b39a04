"""What a mapping would make of an object, without writing anything: the first records read,
mapped and validated exactly as ingestion does (``tallyflow mappings preview``), so a mapping
file is tried on a real object before any event is billed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from tallyflow.models.events import Rejection, TimeBounds, validate_record
from tallyflow.models.mappings import MISSING, DeclarativeMapping, Events, lookup
from tallyflow.tasks.ingest.readers import READERS
from tallyflow.tasks.ingest.sources import SourceSpec, build_source


@dataclass
class Preview:
    records: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    unmapped_usage_fields: dict[str, int] = field(default_factory=dict)
    paths_never_matched: list[str] = field(default_factory=list)


def preview(mapping: str, url: str, rows: int = 20,
            mapping_options: dict[str, Any] | None = None) -> Preview:
    """The events and rejects of the first ``rows`` records of the object at ``url`` (a local
    path or any fsspec URL). Timestamps are checked against the object's write time, as
    ingestion checks them."""
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    folder, _, name = url.rpartition("/")
    source = build_source(SourceSpec(url=folder, pattern=name, mapping=mapping,
                                     mapping_options=mapping_options or {}))
    ref = source.ref(url)  # type: ignore[attr-defined]
    bounds = TimeBounds(written_at=ref.modified_at or datetime.now(UTC))
    found = Preview()
    paths = (set(source.mapping.paths(source.mapping_options))
             if isinstance(source.mapping, DeclarativeMapping) else set())
    with source.open(ref) as stream:
        chunks = READERS[ref.format](stream, max(rows, 1))
        for row, record, _ in islice((r for chunk in chunks for r in chunk), rows):
            found.records += 1
            if isinstance(record, Rejection):
                found.rejects.append(_reject(row, record))
                continue
            if isinstance(record, dict):
                paths -= {p for p in paths if lookup(record, p) is not MISSING}
            mapped = source.map_record(record)
            if isinstance(mapped, Rejection):
                found.rejects.append(_reject(row, mapped))
                continue
            for name_ in getattr(mapped, "unmapped", ()):
                found.unmapped_usage_fields[name_] = found.unmapped_usage_fields.get(name_, 0) + 1
            many = list(mapped) if type(mapped) is Events else [mapped]
            checked = [validate_record(event, bounds) for event in many]
            bad = next((c for c in checked if isinstance(c, Rejection)), None)
            if bad is not None:
                found.rejects.append(_reject(row, bad))
                continue
            for sub, valid in enumerate(checked):
                assert not isinstance(valid, Rejection)
                txn, subscriber, code, stamp, properties, precise = valid
                found.events.append({
                    "row": row, "sub": sub, "transaction_id": txn,
                    "external_subscription_id": subscriber, "code": code,
                    "timestamp": stamp.isoformat(), "properties": orjson.loads(properties),
                    **({"precise_total_amount_cents": str(precise)} if precise is not None
                       else {}),
                })
    found.paths_never_matched = sorted(paths) if found.records else []
    return found


def _reject(row: int, rejection: Rejection) -> dict[str, object]:
    return {"row": row, "reason": str(rejection.reason), "field": rejection.field,
            "message": rejection.message}
