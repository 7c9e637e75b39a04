"""Coupons through the period close against real Postgres: each frequency across three
periods, credited at finalization only, taxed after, consumed exactly once through a crash
between the coupons' credits and the seal.

Lago: spec/services/invoices/calculate_fees_service_spec.rb (coupons before taxes, only when
finalizing), spec/services/credits/applied_coupon_service_spec.rb (frequencies)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.infra import failpoints
from tallyflow.tasks.catalog import apply_catalog
from tests.tasks.invoicing.test_invoicing import MARCH_END, catalog, hour, ingested_until, invoices

APRIL_END = datetime(2025, 5, 1, 3, 59, 59, 999999, tzinfo=UTC)
MAY_END = datetime(2025, 6, 1, 3, 59, 59, 999999, tzinfo=UTC)


def coupon(code: str, **body: Any) -> dict[str, Any]:
    return {"coupon": {"code": code, "name": code.title(), "expiration": "no_expiration",
                       **body}}


COUPONS = [
    coupon("welcome", coupon_type="fixed_amount", amount_cents=1000, amount_currency="USD"),
    coupon("launch", coupon_type="percentage", percentage_rate="10", frequency="recurring",
           frequency_duration=2),
    coupon("loyal", coupon_type="fixed_amount", amount_cents=100, amount_currency="USD",
           frequency="forever"),
    *({"applied_coupon": {"external_customer_id": "acme", "coupon_code": c}}
      for c in ("welcome", "launch", "loyal")),
]


def setup(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]}, wallet=False)
    path = tmp_path / "coupons.json"
    path.write_text(json.dumps(COUPONS))
    result = apply_catalog(engine, [path])
    assert result.ok, result.errors
    assert apply_catalog(engine, [path]).unchanged["applied_coupon"] == 3  # re-applied: nothing


def close(engine: Engine, period_end: datetime) -> dict[str, Any]:
    ingested_until(engine, period_end + timedelta(hours=3))
    return hour(engine, period_end + timedelta(hours=4))


def state(engine: Engine) -> list[tuple[str, str, int | None, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
            "select k.code, a.status, a.frequency_duration_remaining,"
            " (select count(*) from coupon_credits c where c.applied_coupon_id = a.id)"
            " from applied_coupons a join coupons k on k.id = a.coupon_id order by a.id"))]


def totals(invoice: dict[str, Any]) -> tuple[int, ...]:
    return (invoice["fees_amount_cents"], invoice["coupons_amount_cents"],
            invoice["taxes_amount_cents"], invoice["total_amount_cents"])


def test_each_frequency_across_periods_and_a_crash_before_the_seal(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine, tmp_path)
    # a draft shows no coupon (Lago applies them when finalizing)
    hour(engine, MARCH_END + timedelta(hours=4))
    [draft] = invoices(engine)
    assert draft["status"] == "draft" and totals(draft) == (3100, 0, 620, 3720)

    # killed between the credits and the seal: nothing of it stays, the coupons untouched
    def crash(_: Any) -> None:
        raise RuntimeError("killed after the coupons")

    with failpoints.hooked("invoices.after_coupons", crash):
        assert close(engine, MARCH_END)["finalized"] == 0
    assert [s[3] for s in state(engine)] == [0, 0, 0]

    # March: welcome 1000 (once, used up), launch 10 % of 2100 = 210, loyal 100; VAT 20 %
    # on 3100 - 1310 = 1790 -> 358
    assert close(engine, MARCH_END)["finalized"] == 1
    [march] = invoices(engine)
    assert totals(march) == (3100, 1310, 358, 2148)
    assert [(c["item"]["code"], c["amount_cents"]) for c in march["credits"]] == [
        ("welcome", 1000), ("launch", 210), ("loyal", 100)]
    assert march["fees"][0]["precise_coupons_amount_cents"] == "1310.00000"  # numeric(30,5)
    shown = CliRunner().invoke(app, ["invoices", "show", march["number"]])
    assert "coupon welcome: -10.00 USD" in shown.stdout and "coupons -13.10 USD" in shown.stdout
    assert state(engine) == [("welcome", "terminated", None, 1), ("launch", "active", 1, 1),
                             ("loyal", "active", None, 1)]
    # a rerun of the finalized hour changes nothing
    close(engine, MARCH_END)
    assert [s[3] for s in state(engine)] == [1, 1, 1]

    # April: launch 10 % of 3100 = 310 (its last), loyal 100; May: loyal alone
    close(engine, APRIL_END)
    close(engine, MAY_END)
    april, may = sorted((i for i in invoices(engine) if i["lago_id"] != march["lago_id"]),
                        key=lambda i: i["issuing_date"])
    assert totals(april) == (3100, 410, 538, 3228)
    assert totals(may) == (3100, 100, 600, 3600)
    assert state(engine) == [("welcome", "terminated", None, 1), ("launch", "terminated", 0, 2),
                             ("loyal", "active", None, 3)]
    # a finalized invoice's credits never change (migration 0023's guard)
    with pytest.raises(Exception, match="cannot change"), engine.begin() as conn:
        conn.execute(text("insert into coupon_credits (lago_id, invoice_id, applied_coupon_id,"
                          " amount_cents, precise_amount_cents, amount_currency)"
                          " select 'x', v.id, a.id, 1, 1, 'USD' from invoices v,"
                          " applied_coupons a limit 1"))

