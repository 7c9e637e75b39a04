"""Helpers for the rating/usage tests: the Mistral catalog, events through the real ingest path
(a local folder as the bucket), and direct SQL loads for larger or property-based cases."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects

ROOT = Path(__file__).resolve().parents[2]
MISTRAL = ROOT / "examples" / "mistral"
SUB = "sub_acme_001"
_names = itertools.count()


def apply_mistral(engine: Engine, folder: Path, **overrides: Any) -> Path:
    """Copy the Mistral example into ``folder`` (optionally changing documents) and apply it.

    ``overrides`` maps a file stem (``plan``, ``subscription``...) to a function editing its
    inner document in place.
    """
    target = folder / "catalog"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(MISTRAL, target)
    for stem, edit in overrides.items():
        path = target / f"{stem}.json"
        envelope = json.loads(path.read_text())
        edit(envelope[next(iter(envelope))])
        path.write_text(json.dumps(envelope))
    result = apply_catalog(engine, [target])
    assert result.ok, result.errors
    return target


def token_event(
    txn: str,
    timestamp: datetime | int | str,
    tokens: Any,
    model: str = "mistral-small",
    kind: str = "input",
    sub: str = SUB,
    code: str = "mistral_tokens",
) -> dict[str, Any]:
    stamp = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    return {
        "transaction_id": txn,
        "external_subscription_id": sub,
        "code": code,
        "timestamp": stamp,
        "properties": {"tokens": tokens, "model": model, "type": kind},
    }


def ingest_events(engine: Engine, folder: Path, events: Sequence[dict[str, Any]]) -> None:
    """Drop one JSONL object into a folder bucket and ingest it with the real ingest code."""
    bucket = folder / "bucket"
    bucket.mkdir(parents=True, exist_ok=True)
    name = bucket / f"batch-{next(_names):05d}.jsonl"
    name.write_text("".join(json.dumps(e) + "\n" for e in events))
    source = build_source(SourceSpec(url=bucket.as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        result = ingest_object(engine, source, object_id)
        assert result.status == "ingested", result


def load_rows(engine: Engine, rows: Sequence[dict[str, Any]], source: str = "test") -> int:
    """Insert events straight into ``events`` as one ingested object (fast, for big/property
    tests); returns the object id. Rows: sub, txn, code, ts, properties (dict)."""
    with engine.begin() as conn:
        object_id = int(
            conn.execute(
                text(
                    "insert into ingest_objects (source, path, version, status, ingested_at)"
                    " values (:s, :p, '1', 'ingested', now()) returning id"
                ),
                {"s": source, "p": f"mem://{next(_names)}"},
            ).scalar_one()
        )
        if rows:
            conn.execute(
                text(
                    """
                    insert into events (external_subscription_id, transaction_id, code,
                      "timestamp", properties, object_id, row_number)
                    values (:sub, :txn, :code, :ts, cast(:props as jsonb), :oid, :n)
                    on conflict do nothing
                    """
                ),
                [
                    {
                        "sub": r["sub"],
                        "txn": r["txn"],
                        "code": r["code"],
                        "ts": r["ts"],
                        "props": json.dumps(r["properties"]),
                        "oid": object_id,
                        "n": n,
                    }
                    for n, r in enumerate(rows)
                ],
            )
    return object_id


def filter_amounts(usage: dict[str, Any]) -> dict[str | None, int]:
    """invoice_display_name -> amount_cents of the first charge's filters."""
    return {
        f["invoice_display_name"]: f["amount_cents"] for f in usage["charges_usage"][0]["filters"]
    }
