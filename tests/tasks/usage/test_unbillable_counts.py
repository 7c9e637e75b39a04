"""Unbillable events at rating time, through the real ingest, fold and pricing: values that
are not numbers in a summed field (``not_a_number``) and events no charge filter prices
(``unpriced``), counted per subscription and metric with sample ids, the same before and after
a fold and after a rebuild, and in the usage snapshot's batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending, rebuild_states
from tallyflow.tasks.usage import current_usage, due_subscriptions, snapshot_subscriptions
from tests.tasks.rating_fixtures import ingest_events

START = datetime(2026, 1, 1, tzinfo=UTC)
AT = datetime(2026, 1, 20, tzinfo=UTC)
SUB = "sub_unbillable"


def _catalog(folder: Path, default_amount: str | None = None) -> Path:
    charge: dict[str, Any] = {
        "billable_metric_code": "tokens",
        "charge_model": "standard",
        "properties": {"amount": default_amount} if default_amount else {},
        "filters": [{"values": {"model": ["a"]}, "properties": {"amount": "0.01"}}],
    }
    docs = [
        {"billable_metric": {"name": "Tokens", "code": "tokens", "aggregation_type": "sum_agg",
                             "field_name": "n",
                             "filters": [{"key": "model", "values": ["a", "b"]}]}},
        {"billable_metric": {"name": "Calls", "code": "calls", "aggregation_type": "count_agg",
                             "field_name": None}},
        {"billable_metric": {"name": "Users", "code": "users",
                             "aggregation_type": "unique_count_agg", "field_name": "user",
                             "filters": [{"key": "model", "values": ["a", "b"]}]}},
        {"customer": {"external_id": "cust", "currency": "EUR"}},
        {"plan": {"code": "p", "name": "p", "interval": "monthly", "amount_cents": 0,
                  "amount_currency": "EUR",
                  "charges": [charge, {"billable_metric_code": "calls",
                                       "charge_model": "standard",
                                       "properties": {"amount": "0.001"}},
                              {**charge, "billable_metric_code": "users"}]}},
        {"subscription": {"external_id": SUB, "external_customer_id": "cust", "plan_code": "p",
                          "subscription_at": START.isoformat()}},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for index, doc in enumerate(docs):
        (folder / f"{index:02d}.json").write_text(json.dumps(doc))
    return folder


def _event(txn: str, n: Any, model: str | None = "a", code: str = "tokens") -> dict[str, Any]:
    properties: dict[str, Any] = {} if model is None else {"model": model}
    if n is not None:
        properties["n"] = n
    return {"transaction_id": txn, "external_subscription_id": SUB, "code": code,
            "timestamp": "2026-01-10T00:00:00Z", "properties": properties}


# Values a summed field must not silently add as 0: each is not_a_number. Missing and null are
# no value at all (Lago's sum ignores them), and "12" is a number written as text.
HOSTILE = ["abc", True, "1,000", {"x": 1}, [1], "1e3", " 7", "0x10", "NaN", "-", ""]
CLEAN = [("ok-1", 5), ("ok-2", "12"), ("ok-3", None), ("ok-4", 2.5)]


def _unbillable(usage: dict[str, Any]) -> list[tuple[str, str, int, list[str]]]:
    return [(u["billable_metric_code"], u["reason"], u["count"], u["sample_transaction_ids"])
            for u in usage.get("tallyflow_unbillable", [])]


@pytest.fixture
def events() -> list[dict[str, Any]]:
    hostile = [_event(f"nan-{i:02d}", value) for i, value in enumerate(HOSTILE)]
    clean = [_event(txn, value) for txn, value in CLEAN]
    unpriced = [_event("b-1", 1, "b"), _event("b-2", 2, "b"), _event("z-1", 4, "zzz"),
                _event("none-1", 8, None), _event("b-nan", "many", "b")]
    calls = [_event(f"call-{i}", None, None, code="calls") for i in range(3)]
    return hostile + clean + unpriced + calls


def test_counts_with_samples_before_and_after_fold_and_rebuild(
    engine: Engine, tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    ingest_events(engine, tmp_path, events[:9])
    fold_pending(engine)
    # unique counts keep their samples in the Python half of their fold (tasks/folding/sql.py)
    users = [{**_event(f"u-{i}", None, model, code="users"),
              "properties": {"model": model, "user": user}}
             for i, (model, user) in enumerate([("b", "x"), ("a", "y"), ("b", "x"), ("c", "z")])]
    ingest_events(engine, tmp_path, users[:2])
    fold_pending(engine)
    ingest_events(engine, tmp_path, events[9:] + users[2:])  # pending: read from events
    pending = current_usage(engine, SUB, AT)
    expected = [
        ("tokens", "not_a_number", len(HOSTILE) + 1, ["b-nan", "nan-00", "nan-01"]),
        ("tokens", "unpriced", 4, ["b-1", "b-2", "none-1"]),  # the smallest kept
        ("users", "unpriced", 3, ["u-0", "u-2", "u-3"]),
    ]
    assert _unbillable(pending) == expected
    fold_pending(engine)
    folded = current_usage(engine, SUB, AT)
    assert folded == pending
    rebuild_states(engine)
    assert current_usage(engine, SUB, AT) == folded
    # what is billed beside them is untouched: 5 + 12 + 2.5 at 0.01, 3 calls at 0.001
    tokens = next(c for c in folded["charges_usage"]
                  if c["billable_metric"]["code"] == "tokens")
    assert (tokens["units"], tokens["amount_cents"]) == ("34.5", 20)


def test_a_default_price_leaves_only_the_values_that_are_not_numbers(
    engine: Engine, tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog", default_amount="0.02")]).ok
    ingest_events(engine, tmp_path, events)
    assert [(code, reason, count) for code, reason, count, _ in _unbillable(
        current_usage(engine, SUB, AT))] == [("tokens", "not_a_number", len(HOSTILE) + 1)]


def test_a_clean_period_reads_exactly_as_lago(engine: Engine, tmp_path: Path) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    ingest_events(engine, tmp_path, [_event("ok-1", 5)])
    assert "tallyflow_unbillable" not in current_usage(engine, SUB, AT)


def test_the_snapshot_batch_lists_them_per_subscription(
    engine: Engine, tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    ingest_events(engine, tmp_path, events)
    fold_pending(engine)
    batch = snapshot_subscriptions(engine, due_subscriptions(engine, AT), AT)
    assert [(u["subscription"], u["reason"], u["count"]) for u in batch.unbillable] == [
        (SUB, "not_a_number", len(HOSTILE) + 1), (SUB, "unpriced", 4)]
