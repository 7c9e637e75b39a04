"""Money end to end in more than one currency: catalog applied, events ingested, usage rated
(real Postgres). The pure rules are pinned in tests/models/rating/test_money.py; this file pins
that every path through the database uses them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.usage import current_usage
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

MARCH = datetime(2025, 3, 15, 12, tzinfo=UTC)
TS = "2025-03-10T10:00:00Z"


def _in_currency(currency: str, charge: dict[str, Any]) -> dict[str, Any]:
    def plan(doc: dict[str, Any]) -> None:
        doc["amount_currency"] = currency
        doc["charges"] = [{"billable_metric_code": "mistral_tokens", **charge}]

    def set_currency(doc: dict[str, Any]) -> None:
        doc["currency"] = currency

    return {"plan": plan, "customer": set_currency, "wallet": set_currency}


@pytest.mark.parametrize(
    ("currency", "amount_cents", "precise"),
    [("USD", 1235, "1234.5"), ("JPY", 1235, "1234.5"), ("KWD", 1235, "1234.5")],
)
def test_dynamic_charge_in_the_currency_minor_units(
    engine: Engine, tmp_path: Path, currency: str, amount_cents: int, precise: str
) -> None:
    """1234.5 precise minor units are $12.35, ¥1,235 and 1.235 KWD (the dynamic model used to
    divide by 100 whatever the currency: ¥12, and 12,345 fils)."""
    apply_mistral(engine, tmp_path, **_in_currency(currency, {"charge_model": "dynamic"}))
    events = [token_event("a1", TS, 10), token_event("a2", TS, 5)]
    events[0]["precise_total_amount_cents"] = 1000.25  # a JSON number, read from its text
    events[1]["precise_total_amount_cents"] = "234.25"
    ingest_events(engine, tmp_path, events)
    fold_pending(engine)
    usage = current_usage(engine, SUB, MARCH)
    assert usage["currency"] == currency
    assert usage["amount_cents"] == amount_cents
    assert Decimal(usage["precise_amount_cents"]) == Decimal(precise)


@pytest.mark.parametrize(("currency", "expected"), [("USD", 1235), ("JPY", 12), ("KWD", 12345)])
def test_standard_charge_rounds_at_the_currency_minor_unit(
    engine: Engine, tmp_path: Path, currency: str, expected: int
) -> None:
    """12.345 major units: $12.35 (1235 cents), ¥12, 12.345 KWD = 12345 fils."""
    charge = {"charge_model": "standard", "properties": {"amount": "0.012345"}}
    apply_mistral(engine, tmp_path, **_in_currency(currency, charge))
    ingest_events(engine, tmp_path, [token_event("a1", TS, 1000)])
    fold_pending(engine)
    assert current_usage(engine, SUB, MARCH)["amount_cents"] == expected


def test_numeric_strings_in_properties_aggregate_exactly(engine: Engine, tmp_path: Path) -> None:
    """As in Lago, "tokens": "1234" counts as the number 1234; decimals stay exact."""
    charge = {"charge_model": "standard", "properties": {"amount": "1"}}
    apply_mistral(engine, tmp_path, **_in_currency("USD", charge))
    ingest_events(engine, tmp_path, [
        token_event("a1", TS, "1234"),
        token_event("a2", TS, 1000),
        token_event("a3", TS, "0.1"),
        token_event("a4", TS, 0.2),
        token_event("a5", TS, "12345678901234567890.123456789"),
        token_event("a6", TS, "1e3"),  # not a plain decimal: not counted (reported)
    ])
    fold_pending(engine)
    usage = current_usage(engine, SUB, MARCH)
    [charge_usage] = usage["charges_usage"]
    assert Decimal(charge_usage["units"]) == Decimal("12345678901234570124.423456789")
    assert charge_usage["events_count"] == 5


def test_decimal_tiers_given_as_json_numbers_are_priced(engine: Engine, tmp_path: Path) -> None:
    """Lago's own decimal tiers (0-0.1, 0.1-1, 1-open) with JSON-number bounds apply, are
    stored and come back exact from the database."""
    tiers = [
        {"from_value": 0, "to_value": Decimal("0.1"), "per_unit_amount": "10",
         "flat_amount": "0"},
        {"from_value": Decimal("0.1"), "to_value": 1, "per_unit_amount": "1", "flat_amount": "0"},
        {"from_value": 1, "to_value": None, "per_unit_amount": "0.1", "flat_amount": "0"},
    ]
    charge = {"charge_model": "graduated", "properties": {"graduated_ranges": tiers}}
    edits = _in_currency("USD", charge)
    plan_edit = edits["plan"]

    def plan_with_number_bounds(doc: dict[str, Any]) -> None:
        plan_edit(doc)
        for tier in doc["charges"][0]["properties"]["graduated_ranges"]:
            for key in ("from_value", "to_value"):
                if isinstance(tier[key], Decimal):
                    tier[key] = float(tier[key])  # written by json.dumps as the number 0.1

    apply_mistral(engine, tmp_path, **{**edits, "plan": plan_with_number_bounds})
    ingest_events(engine, tmp_path, [token_event("a1", TS, "2")])
    fold_pending(engine)
    # 0.1 x $10 + 0.9 x $1 + 1 x $0.1 = $2.00
    assert current_usage(engine, SUB, MARCH)["amount_cents"] == 200
