"""Pricing from state: pricing groups (grouped_usage), unique counts, a recurring weighted sum
carrying its level into the next period, and pending (not folded) events read directly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.usage import current_usage
from tests.tasks.rating_fixtures import load_rows
from tests.tasks.usage.test_rating_state import _catalog

FEB = datetime(2025, 2, 20, tzinfo=UTC)


def _event(n: int, code: str, ts: str, **properties: Any) -> dict[str, Any]:
    return {
        "sub": "s_month",
        "txn": f"t{n}",
        "code": code,
        "ts": datetime.fromisoformat(ts),
        "properties": properties,
    }


def _charge(usage: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in usage["charges_usage"] if c["billable_metric"]["code"] == code)


def test_groups_unique_and_recurring_weighted(engine: Engine, tmp_path: Path) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    load_rows(
        engine,
        [
            _event(1, "m_sum", "2025-02-03T00:00:00+00:00", v=100, model="a", region="eu"),
            _event(2, "m_sum", "2025-02-03T00:00:00+00:00", v=50, model="b", region="eu"),
            _event(3, "m_sum", "2025-02-04T00:00:00+00:00", v=10, model="a", region="us"),
            _event(4, "m_unique", "2025-02-03T00:00:00+00:00", user="u1"),
            _event(5, "m_unique", "2025-02-03T00:00:00+00:00", user="u2"),
            _event(6, "m_unique", "2025-02-05T00:00:00+00:00", user="u1", operation_type="remove"),
            _event(7, "m_weighted", "2025-01-20T00:00:00+00:00", v=10, model="a"),
        ],
    )
    pending = current_usage(engine, "s_month", FEB)
    fold_pending(engine)
    usage = current_usage(engine, "s_month", FEB)
    assert usage == pending
    assert usage["currency"] == "EUR"
    assert usage["from_datetime"] == "2025-01-31T23:00:00Z"  # Paris midnight

    grouped = _charge(usage, "m_sum")
    assert grouped["units"] == "160" and grouped["amount_cents"] == 270
    assert [(f["values"], f["units"], f["amount_cents"]) for f in grouped["filters"]] == [
        ({"model": ["a"]}, "110", 220),
        (None, "50", 50),
    ]
    assert [
        (g["grouped_by"], g["units"], g["amount_cents"], [f["amount_cents"] for f in g["filters"]])
        for g in grouped["grouped_usage"]
    ] == [({"region": "eu"}, "150", 250, [200, 50]), ({"region": "us"}, "10", 20, [20])]

    unique = _charge(usage, "m_unique")
    assert unique["units"] == "1" and unique["amount_cents"] == 1

    weighted = _charge(usage, "m_weighted")
    assert weighted["units"] == "10" and weighted["amount_cents"] == 20
    assert weighted["filters"][0]["units"] == "10"
    assert usage["amount_cents"] == 270 + 1 + 20 + sum(
        _charge(usage, code)["amount_cents"] for code in ("m_rsum", "m_runique"))
