"""The running balance a gateway reads (docs/architecture.md §19): the refreshed figure equals
live current usage, a second pass changes nothing, and ``allowed`` flips at the boundary.

Lago has no such endpoint; its figure is the wallet's ``ongoing_balance_cents``, refreshed
asynchronously too (lago-api spec/jobs/clock/refresh_wallets_ongoing_balance_job_spec.rb;
spec/services/wallets/balance/refresh_ongoing_usage_service_spec.rb: balance minus ongoing
usage), which is the figure computed here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import CustomerBalance
from tallyflow.tasks import wallets as w
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.usage import rated_usage
from tests.tasks.rating_fixtures import load_rows
from tests.tasks.usage.test_rating_state import _catalog

FEB = datetime(2025, 2, 20, tzinfo=UTC)


def _event(n: int, ts: str, v: int) -> dict[str, Any]:
    return {"sub": "s_month", "txn": f"t{n}", "code": "m_sum",
            "ts": datetime.fromisoformat(ts), "properties": {"v": v, "model": "a"}}


def _rows(engine: Engine) -> dict[str, tuple[Decimal, int]]:
    with engine.connect() as conn:
        return {r.external_subscription_id: (Decimal(r.amount_cents), int(r.event_watermark))
                for r in conn.execute(text("select * from running_usage"))}


def _seeded(engine: Engine, tmp_path: Path) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    load_rows(engine, [_event(1, "2025-02-03T00:00:00+00:00", 100),
                       _event(2, "2025-02-04T00:00:00+00:00", 7)])


def test_figure_equals_current_usage_and_refresh_is_idempotent(
    engine: Engine, tmp_path: Path
) -> None:
    _seeded(engine, tmp_path)
    first = w.refresh_running_usage(engine, FEB)
    live, _ = rated_usage(engine, "s_month", FEB).in_arrears()
    assert first.rated == 1 and _rows(engine)["s_month"][0] == live > 0
    once = _rows(engine)
    again = w.refresh_running_usage(engine, FEB)  # the overlap rescans: same figures
    assert _rows(engine) == once and again.watermark == first.watermark
    load_rows(engine, [_event(3, "2025-02-05T00:00:00+00:00", 50)])
    later = w.refresh_running_usage(engine, FEB)
    live, _ = rated_usage(engine, "s_month", FEB).in_arrears()
    assert later.watermark > first.watermark
    assert _rows(engine)["s_month"] == (Decimal(live), later.watermark) and live > once[
        "s_month"][0]


def test_an_ended_subscription_leaves_the_figures(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    with engine.begin() as conn:
        conn.execute(text("update subscriptions set terminated_at = '2025-02-25T00:00:00Z',"
                          " status = 'terminated' where external_id = 's_month'"))
    w.refresh_running_usage(engine, datetime(2025, 3, 10, tzinfo=UTC))
    assert "s_month" not in _rows(engine)


@pytest.mark.parametrize(("ongoing", "overdraft", "expected"), [
    pytest.param("-1", "0", False, id="below"),
    pytest.param("0", "0", True, id="at"),
    pytest.param("1", "0", True, id="above"),
    pytest.param("-100", "100", True, id="at-overdraft"),
    pytest.param("-101", "100", False, id="below-overdraft"),
])
def test_allowed_boundary(ongoing: str, overdraft: str, expected: bool) -> None:
    assert w.allowed(Decimal(ongoing), Decimal(overdraft)) is expected


def test_customer_balance_flips_at_the_usage(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    usage = sum(amount for amount, _ in _rows(engine).values())
    with engine.begin() as conn:
        customer = conn.execute(text("select id from customers where external_id = 'c'")
                                ).scalar_one()
        wallet = conn.execute(text(
            "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
            " granted_credits, priority, document, digest) values (:c, 'main', 'main', 'EUR',"
            " 1, 0, 0, 50, '{}', 'x') returning id"), {"c": customer}).scalar_one()
        conn.execute(text("insert into wallet_balances (wallet_id, customer_id, balance_cents)"
                          " values (:w, :c, :b)"), {"w": wallet, "c": customer, "b": usage})
    cases = [(usage, 0, True), (usage - 1, 0, False), (usage - 1, 1, True)]
    for balance, overdraft, expected in cases:
        with engine.begin() as conn:
            conn.execute(text("update wallet_balances set balance_cents = :b"), {"b": balance})
            answer = w.customer_balance(conn, "c", overdraft)
        assert mismatches(answer, CustomerBalance) == []
        assert answer["ongoing_usage_cents"] == usage
        assert answer["ongoing_balance_cents"] == balance - usage
        assert answer["allowed"] is expected, (balance, overdraft)
    with engine.connect() as conn, pytest.raises(w.WalletError):
        w.customer_balance(conn, "nobody", 0)
