"""Prorated charges end to end on real Postgres: the SQL fold keeps per-day totals of a
recurring sum, current usage (pending and folded agree) prices the prorated units, the hourly
wallet run deducts those amounts, and the period's invoice fee shows the full units with the
prorated amount (Lago's fee units).

Seats at $31 a month ($1 a seat-day), customer in New York:
- February (partial: the subscription starts on 10 Feb, still divided by 28 days):
  2 seats on 20 Feb -> 2 x 9/28 = 0.64286 -> $19.93
- March (31 days): the 2 seats are carried in full, +3 on 22 Mar (10 days), -1 on 27 Mar
  (5 days) -> 2 + 30/31 - 5/31 = 2.80646 -> $87.00; 4 full units.
Members (a recurring unique count, volume at $31 a member-month up to 1 member): u1 added on
20 Feb (9/28 -> $9.96), removed on 27 Mar (1..27 Mar: the removal day counts), u2 added on
22 Mar (10 days) -> 37/31 = 1.19355 at the range of the 1 full member -> $37.00.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.usage import current_usage
from tests.tasks.invoicing.test_invoicing import hour, ingested_until, invoices
from tests.tasks.rating_fixtures import load_rows
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

VOLUME = {"volume_ranges": [
    {"from_value": 0, "to_value": 1, "per_unit_amount": "31", "flat_amount": "0"},
    {"from_value": 2, "to_value": None, "per_unit_amount": "20", "flat_amount": "5"},
]}
GRADUATED = {"graduated_ranges": [
    {"from_value": 0, "to_value": 3, "per_unit_amount": "31", "flat_amount": "0"},
    {"from_value": 4, "to_value": None, "per_unit_amount": "62", "flat_amount": "10"},
]}


def _catalog(engine: Engine, folder: Path) -> None:
    docs: list[dict[str, Any]] = [
        {"billable_metric": {"code": "seats", "name": "Seats", "aggregation_type": "sum_agg",
                             "field_name": "seats", "recurring": True}},
        {"billable_metric": {"code": "members", "name": "Members",
                             "aggregation_type": "unique_count_agg", "field_name": "user",
                             "recurring": True}},
        {"customer": {"external_id": "acme", "currency": "USD",
                      "timezone": "America/New_York"}},
        {"plan": {"code": "team", "name": "Team", "interval": "monthly", "amount_cents": 0,
                  "amount_currency": "USD", "charges": [
                      {"billable_metric_code": "seats", "charge_model": "standard",
                       "prorated": True, "properties": {"amount": "31"}},
                      {"billable_metric_code": "seats", "charge_model": "graduated",
                       "prorated": True, "properties": GRADUATED},
                      {"billable_metric_code": "members", "charge_model": "volume",
                       "prorated": True, "properties": VOLUME},
                  ]}},
        {"subscription": {"external_id": "s1", "external_customer_id": "acme",
                          "plan_code": "team", "subscription_at": "2025-02-10T15:00:00Z"}},
        {"wallet": {"external_customer_id": "acme", "name": "Prepaid", "currency": "USD",
                    "rate_amount": "1", "paid_credits": "100"}},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for index, doc in enumerate(docs):
        (folder / f"{index}.json").write_text(json.dumps(doc))
    result = apply_catalog(engine, [folder])
    assert result.ok, result.errors


def _seats(n: int, ts: str, seats: int) -> dict[str, Any]:
    return {"sub": "s1", "txn": f"t{n}", "code": "seats", "ts": datetime.fromisoformat(ts),
            "properties": {"seats": seats}}


def _member(n: int, ts: str, user: str, operation: str = "add") -> dict[str, Any]:
    return {"sub": "s1", "txn": f"m{n}", "code": "members", "ts": datetime.fromisoformat(ts),
            "properties": {"user": user, "operation_type": operation}}


def _charges(usage: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(c["charge"]["charge_model"], c["units"], c["amount_cents"])
            for c in usage["charges_usage"]]


def test_prorated_usage_and_invoice(engine: Engine, tmp_path: Path) -> None:
    _catalog(engine, tmp_path / "catalog")
    # 20 Feb 03:00Z is still 19 Feb in New York: the local day decides the weight
    load_rows(engine, [_seats(1, "2025-02-20T05:00:00+00:00", 2),
                       _seats(2, "2025-02-20T03:00:00+00:00", 0),
                       _member(1, "2025-02-20T05:00:00+00:00", "u1")])
    feb = current_usage(engine, "s1", datetime(2025, 2, 25, tzinfo=UTC))
    fold_pending(engine)
    assert current_usage(engine, "s1", datetime(2025, 2, 25, tzinfo=UTC)) == feb
    # standard: 2 x 9/28 = 0.642857.. ceiled to 0.64286 x $31; graduated: same, first range
    assert _charges(feb) == [("standard", "2", 1993), ("graduated", "2", 1993),
                             ("volume", "1", 996)]
    # the hourly wallet run deducts what the prorated usage says is owed
    hour(engine, datetime(2025, 2, 25, 12, tzinfo=UTC))
    assert balances(engine)["acme/prepaid"]["cents"] == 10000 - 4982

    load_rows(engine, [_seats(3, "2025-03-22T16:00:00+00:00", 3),
                       _seats(4, "2025-03-27T16:00:00+00:00", -1),
                       _member(2, "2025-03-27T16:00:00+00:00", "u1", "remove"),
                       _member(3, "2025-03-22T16:00:00+00:00", "u2")])
    at = datetime(2025, 3, 28, tzinfo=UTC)
    pending = current_usage(engine, "s1", at)
    fold_pending(engine)
    march = current_usage(engine, "s1", at)
    assert march == pending
    # graduated: carried 2 (1 each) + 3 x 10/31 of which 1 unit in the first range and
    # 2 in the second (+ its $10 flat), then -1 x 5/31 back in the second range:
    # 31 x (2 + 10/31) + 62 x (20/31 - 5/31) + 10 = 72 + 30 + 10 = $112
    assert _charges(march) == [("standard", "4", 8700), ("graduated", "4", 11200),
                               ("volume", "1", 3700)]

    # February closes on its own invoice: full units, prorated amounts
    feb_end = datetime(2025, 3, 1, 4, 59, 59, 999999, tzinfo=UTC)
    ingested_until(engine, feb_end + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 1, 9, tzinfo=UTC))
    [invoice] = invoices(engine)
    assert [(f["item"]["type"], f["units"], f["amount_cents"]) for f in invoice["fees"]
            if f["item"]["type"] == "charge"] == [
        ("charge", "2", 1993), ("charge", "2", 1993), ("charge", "1", 996)]
    assert invoice["prepaid_credit_amount_cents"] == 4982
    assert_balances_match_ledger(engine)


def test_prorated_over_a_plan_change(engine: Engine, tmp_path: Path) -> None:
    """An upgrade on 15 March: the old row is prorated to the change day; the new row carries
    the units from before the change at 17/31 (Lago's persisted units of the upgraded
    subscription) and weighs its own from their day."""
    from tallyflow.tasks.subscriptions import change_plan

    _catalog(engine, tmp_path / "catalog")
    pro = {"plan": {"code": "pro", "name": "Pro", "interval": "monthly", "amount_cents": 100,
                    "amount_currency": "USD", "charges": [
                        {"billable_metric_code": "seats", "charge_model": "standard",
                         "prorated": True, "properties": {"amount": "62"}}]}}
    (tmp_path / "pro").mkdir()
    (tmp_path / "pro" / "plan.json").write_text(json.dumps(pro))
    assert apply_catalog(engine, [tmp_path / "pro"]).ok
    load_rows(engine, [_seats(1, "2025-03-03T16:00:00+00:00", 2)])
    change = datetime(2025, 3, 15, 16, tzinfo=UTC)  # noon in New York
    fold_pending(engine)
    change_plan(engine, "s1", "pro", change, now=change)
    load_rows(engine, [_seats(2, "2025-03-20T16:00:00+00:00", 2)])
    fold_pending(engine)
    old = current_usage(engine, "s1", datetime(2025, 3, 10, tzinfo=UTC))
    assert old["to_datetime"] == "2025-03-15T15:59:59Z"
    assert _charges(old)[0] == ("standard", "2", 2600)  # 2 x 13/31 x $31 (3..15 March)
    new = current_usage(engine, "s1", datetime(2025, 3, 28, tzinfo=UTC))
    # (2 x 17 + 2 x 12) / 31 = 1.87097 x $62
    assert _charges(new) == [("standard", "4", 11600)]
