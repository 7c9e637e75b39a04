"""One balance path (docs/architecture.md §21): the wallet overview (the wallet endpoints'
``ongoing_balance_cents``, ``tallyflow wallets show``) and the wallet alerts read the running
figure the balance endpoint reads; a stale or missing figure is rated live by the overview;
a void is seen at the next pass; a depleted ongoing balance gives the Lago webhook and the
operator's Prefect event from the same evaluation, once.

Lago: ``Wallets::Balance::RefreshOngoingUsageService`` (ongoing balance = balance minus ongoing
usage; ``depleted_ongoing_balance`` when it is <= 0) and ``UpdateOngoingService`` (the
``wallet.depleted_ongoing_balance`` webhook on that flag's rise).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.models.lago.resources import WalletOverview
from tallyflow.models.wallets import (
    UsageScope,
    WalletFunds,
    ongoing_balances,
    running_fresh,
)
from tallyflow.tasks import wallets as w
from tallyflow.tasks.corrections.voids import EventKey, void_events
from tallyflow.tasks.usage import rated_usage
from tallyflow.tasks.webhooks import add_endpoint
from tests.tasks.wallets.test_balance import FEB, _rows, _seeded

LATER = FEB + timedelta(minutes=10)  # past the 120 s the tests allow


@pytest.mark.parametrize(
    ("pass_at", "moment", "fresh"),
    [
        pytest.param(None, FEB, False, id="no-pass"),
        pytest.param(FEB, FEB, True, id="at-the-pass"),
        pytest.param(FEB, FEB + timedelta(seconds=119), True, id="within"),
        pytest.param(FEB, FEB + timedelta(seconds=120), True, id="at-max-age"),
        pytest.param(FEB, FEB + timedelta(seconds=120.001), False, id="past-max-age"),
        pytest.param(FEB, FEB - timedelta(seconds=1), False, id="read-before-the-pass"),
    ],
)
def test_running_fresh_boundaries(pass_at: datetime | None, moment: datetime, fresh: bool) -> None:
    assert running_fresh(pass_at, moment, 120) is fresh


def test_ongoing_balances_per_customer_in_wallet_order() -> None:
    old, new = FEB - timedelta(days=2), FEB - timedelta(days=1)
    funds = [
        (1, WalletFunds(10, 1, old, Decimal(1), "EUR", Decimal(5), balance_cents=Decimal(500))),
        (1, WalletFunds(11, 2, new, Decimal(1), "EUR", Decimal(5), balance_cents=Decimal(500))),
        (2, WalletFunds(20, 1, old, Decimal(1), "EUR", Decimal(1), balance_cents=Decimal(100))),
    ]
    scopes = [
        UsageScope((7, FEB), 1, "EUR", Decimal("650.4"), Decimal(0)),  # 650 to take
        UsageScope((8, FEB), 2, "EUR", Decimal(40), Decimal(90)),  # a decrease: nothing owed
    ]
    assert ongoing_balances(scopes, funds) == {
        10: (Decimal(0), Decimal(0)),  # priority 1 is taken first, whole
        11: (Decimal("3.5"), Decimal(350)),
        20: (Decimal(1), Decimal(100)),
    }


def _wallet(engine: Engine, balance_cents: Decimal) -> int:
    """An active wallet of customer ``c`` at 1 EUR per credit with this balance."""
    with engine.begin() as conn:
        customer = conn.execute(
            text("select id from customers where external_id = 'c'")
        ).scalar_one()
        wallet = int(
            conn.execute(
                text(
                    "insert into wallets (customer_id, code, name, currency, rate_amount,"
                    " paid_credits, granted_credits, priority, document, digest)"
                    " values (:c, 'main', 'main', 'EUR', 1, 0, 0, 50, '{}', 'x') returning id"
                ),
                {"c": customer},
            ).scalar_one()
        )
        conn.execute(
            text(
                "insert into wallet_balances (wallet_id, customer_id, balance_cents,"
                " credits_balance) values (:w, :c, :b, :b / 100)"
            ),
            {"w": wallet, "c": customer, "b": balance_cents},
        )
    return wallet


def _scope(overview: WalletOverview) -> tuple[int | str, str]:
    [sub] = [
        s
        for s in overview["ongoing_usage"]["subscriptions"]
        if s["external_subscription_id"] == "s_month"
    ]
    return sub["amount_cents"], sub["source"]


def test_overview_reads_the_running_figure_and_rates_live_when_stale(
    engine: Engine, tmp_path: Path
) -> None:
    _seeded(engine, tmp_path)
    live, _ = rated_usage(engine, "s_month", FEB).in_arrears()
    # no pass yet: rated live
    assert _scope(w.wallet_overview(engine, "c", FEB, max_age_seconds=120)) == (int(live), "live")
    w.refresh_running_usage(engine, FEB)
    # the figure is what is read: changed behind the refresh's back, the overview shows it
    with engine.begin() as conn:
        conn.execute(text("update running_usage set amount_cents = 1234"))
    fresh = w.wallet_overview(engine, "c", FEB + timedelta(seconds=30), max_age_seconds=120)
    assert _scope(fresh) == (1234, "running_usage")
    assert fresh["ongoing_usage"]["refreshed_at"] == FEB.isoformat()
    # the refresh not running (its pass older than the max age): rated live again
    assert _scope(w.wallet_overview(engine, "c", LATER, max_age_seconds=120)) == (int(live), "live")


def test_overview_and_balance_endpoint_agree(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    usage = _rows(engine)["s_month"][0]
    _wallet(engine, usage + 250)
    [wallet] = w.wallet_overview(engine, "c", FEB, max_age_seconds=120)["wallets"]
    with engine.connect() as conn:
        answer = w.customer_balance(conn, "c", 0)
    assert wallet["ongoing_balance_cents"] == answer["ongoing_balance_cents"] == 250
    assert wallet["credits_ongoing_balance"] == "2.50000"


def test_a_void_is_seen_at_the_next_pass(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)
    w.refresh_running_usage(engine, FEB)
    before = _rows(engine)["s_month"][0]
    void_events(engine, [EventKey("s_month", "t1")], "ops", "test", FEB)
    # no rescan below the watermark: only the void can make the pass rate s_month again
    w.refresh_running_usage(engine, FEB + timedelta(seconds=1), overlap=0)
    live, _ = rated_usage(engine, "s_month", FEB).in_arrears()
    assert _rows(engine)["s_month"][0] == Decimal(live) < before


def _depleted(engine: Engine) -> tuple[list[tuple[str, int]], list[dict[str, object]]]:
    with engine.connect() as conn:
        alerts = [
            (r.kind, int(r.crossing))
            for r in conn.execute(text("select kind, crossing from wallet_alerts order by id"))
        ]
        hooks = [
            r.payload
            for r in conn.execute(
                text(
                    "select body::jsonb -> 'wallet' as payload from webhooks"
                    " where webhook_type = 'wallet.depleted_ongoing_balance' order by id"
                )
            )
        ]
    return alerts, hooks


def test_depleted_ongoing_balance_gives_webhook_and_operator_event_once(
    engine: Engine, tmp_path: Path
) -> None:
    _seeded(engine, tmp_path)
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks"})
    w.refresh_running_usage(engine, FEB)
    usage = _rows(engine)["s_month"][0]
    wallet = _wallet(engine, usage - 1)  # settled balance positive, ongoing one cent short
    # the refresh not fresh at the evaluation: the settled balance, nothing depleted
    assert w.evaluate_alerts(engine, LATER, max_age_seconds=120).opened == 0
    summary = w.evaluate_alerts(engine, FEB, max_age_seconds=120)
    assert summary.opened == 1
    alerts, hooks = _depleted(engine)
    assert alerts == [("balance_depleted", 1)]
    [hook] = hooks
    assert hook["lago_id"] == str(wallet) and hook["ongoing_balance_cents"] == -1
    assert hook["credits_ongoing_balance"] == "-0.01000"
    assert hook["balance_cents"] == int(usage - 1)
    # the operator's Prefect event comes from the same row
    pending = w.pending_alert_events(engine)
    assert [a["kind"] for a in pending.alerts] == ["balance_depleted"]
    assert w.alert_event(pending.alerts[0])["event"] == "tallyflow.wallet.balance-depleted"
    # once per crossing: evaluating again adds neither
    assert w.evaluate_alerts(engine, FEB, max_age_seconds=120).opened == 0
    assert _depleted(engine) == (alerts, hooks)
    # a top-up over the usage resolves it (nothing sent); the next crossing is a new one
    with engine.begin() as conn:
        conn.execute(
            text(
                "update wallet_balances set balance_cents = balance_cents + 100,"
                " credits_balance = credits_balance + 1"
            )
        )
    assert w.evaluate_alerts(engine, FEB, max_age_seconds=120).resolved == 1
    assert len(_depleted(engine)[1]) == 1
