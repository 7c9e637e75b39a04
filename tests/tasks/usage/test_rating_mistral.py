"""The Mistral template end to end: catalog applied, events ingested, current usage out.

Cents are worked out by hand: package model, 1,000,000 tokens per package, rounded up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.folding import fold_pending, rebuild_states
from tallyflow.tasks.usage import current_usage
from tests.tasks.rating_fixtures import (
    SUB,
    apply_mistral,
    filter_amounts,
    ingest_events,
    token_event,
)

MARCH = datetime(2025, 3, 15, 12, tzinfo=UTC)


def _mistral_events() -> list[dict]:
    ts = "2025-03-10T10:00:00Z"
    return [
        token_event("a1", ts, 1_500_000),  # small input: 2,000,000 in total -> 2 x $1
        token_event("a2", ts, 500_000),
        token_event("b1", ts, 1, model="mistral-large", kind="output"),  # 1 package x $12
        token_event("c1", ts, 500_000, model="mistral-medium"),  # 1 package x $2.7
        token_event("d1", ts, 42, model="mistral-tiny"),  # default bucket, priced 0
        token_event("e1", ts, "lots"),  # not a plain decimal: never billed
        token_event("f1", ts, 7, sub="sub_nobody"),  # unknown subscription
        token_event("g1", "2025-02-27T10:00:00Z", 9_000_000),  # another period
    ]


def test_mistral_end_to_end_cents_by_hand(engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, _mistral_events())

    before = current_usage(engine, SUB, MARCH)  # nothing folded yet: read directly
    fold = fold_pending(engine)
    after = current_usage(engine, SUB, MARCH)
    assert before == after

    assert after["from_datetime"] == "2025-03-01T05:00:00Z"
    assert after["to_datetime"] == "2025-04-01T03:59:59Z"
    assert after["issuing_date"] == "2025-04-01"
    assert after["currency"] == "USD"
    assert after["amount_cents"] == 200 + 1200 + 270
    assert after["total_amount_cents"] == after["amount_cents"]
    assert after["taxes_amount_cents"] == 0
    charge = after["charges_usage"][0]
    assert charge["billable_metric"] == {
        "lago_id": charge["billable_metric"]["lago_id"],
        "name": "AI Tokens",
        "code": "mistral_tokens",
        "aggregation_type": "sum_agg",
    }
    assert charge["charge"]["charge_model"] == "package"
    assert charge["units"] == "2500043"
    assert charge["events_count"] == 5
    assert filter_amounts(after) == {
        "mistral-small input tokens": 200,
        "mistral-small output tokens": 0,
        "mistral-medium input tokens": 270,
        "mistral-medium output tokens": 0,
        "mistral-large input tokens": 0,
        "mistral-large output tokens": 1200,
        None: 0,
    }
    default = charge["filters"][-1]
    assert default["values"] is None and default["units"] == "42"
    small = charge["filters"][0]
    assert small["values"] == {"model": ["mistral-small"], "type": ["input"]}
    assert small["units"] == "2000000" and small["events_count"] == 2
    assert small["precise_amount_cents"] == "200"
    assert charge["grouped_usage"] == []

    # The unparseable value and the unknown subscription were never folded, but counted.
    assert fold.events == 8 and fold.folded == 7 and fold.unbillable == 1
    with engine.connect() as conn:
        unbillable = conn.execute(
            text("select sum(unbillable_count) from usage_states")
        ).scalar_one()
    assert unbillable == 1

    february = current_usage(engine, SUB, datetime(2025, 2, 20, tzinfo=UTC))
    assert february["amount_cents"] == 900  # 9 packages of small input

    # One more token of small input: a third package.
    ingest_events(engine, tmp_path, [token_event("h1", "2025-03-20T00:00:00Z", 1)])
    assert filter_amounts(current_usage(engine, SUB, MARCH))["mistral-small input tokens"] == 300


def test_new_york_period_boundary(engine: Engine, tmp_path: Path) -> None:
    """23:59:59 local on the period's last day is in it; one second later is the next one."""
    apply_mistral(engine, tmp_path)
    ingest_events(
        engine,
        tmp_path,
        [
            token_event("last", "2025-03-31T23:59:59-04:00", 1_000_000),
            token_event("next", "2025-04-01T00:00:00-04:00", 3_000_000),
        ],
    )
    fold_pending(engine)
    march = current_usage(engine, SUB, MARCH)
    april = current_usage(engine, SUB, datetime(2025, 4, 1, 4, tzinfo=UTC))
    assert march["amount_cents"] == 100
    assert april["amount_cents"] == 300
    assert april["from_datetime"] == "2025-04-01T04:00:00Z"


def test_charge_filter_change_reprices_without_rebuild_and_rebuild_is_identity(
    engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, _mistral_events())
    fold_pending(engine)
    before = current_usage(engine, SUB, MARCH)

    def cheaper(plan: dict) -> None:
        plan["charges"][0]["filters"][0]["properties"]["amount"] = "0.5"

    apply_mistral(engine, tmp_path, plan=cheaper)
    after = current_usage(engine, SUB, MARCH)
    assert filter_amounts(after)["mistral-small input tokens"] == 100
    assert after["amount_cents"] == before["amount_cents"] - 100

    with engine.connect() as conn:
        states = conn.execute(text("select * from usage_states order by 1, 2, 3")).all()
    summary = rebuild_states(engine, "mistral_tokens")
    assert summary.folded == 7
    with engine.connect() as conn:
        rebuilt = conn.execute(text("select * from usage_states order by 1, 2, 3")).all()
    def strip(rows: list) -> list[dict]:  # fold_id, updated_at differ
        return [{k: v for k, v in r._mapping.items() if k not in ("fold_id", "updated_at")}
                for r in rows]

    assert strip(states) == strip(rebuilt)
    with pytest.raises(ValueError):
        rebuild_states(engine, "nope")


def test_unknown_subscription_and_time_outside_are_errors(engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    with pytest.raises(LookupError):
        current_usage(engine, "sub_nobody", MARCH)
    with pytest.raises(ValueError):
        current_usage(engine, SUB, datetime(2024, 6, 1, tzinfo=UTC))
