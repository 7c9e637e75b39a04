"""Small builders for test data (events, batches), shared by the tests."""

from __future__ import annotations

import json
from typing import Any

BASE_TS = 1_764_000_000  # 2025-11-24T16:00:00Z: fixed, so tests do not depend on today


def event(i: int, sub: str = "sub_acme_001", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": f"tx-{i}",
        "external_subscription_id": sub,
        "code": "mistral_tokens",
        "timestamp": BASE_TS + i,
        "properties": {
            "tokens": 1000 + i,
            "model": ("mistral-small", "mistral-medium", "mistral-large")[i % 3],
            "type": "input" if i % 2 else "output",
        },
    }
    body.update(overrides)
    return body


def jsonl(records: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)
