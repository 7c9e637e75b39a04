"""Top-ups (initial, manual, mark-paid, interval, threshold), expiry, alerts, and the Mistral
demo customer's wallet after its usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import PrefectEvent
from tallyflow.tasks import wallets as w
from tallyflow.tasks.catalog import apply_catalog
from tests.tasks.wallets.test_wallets_support import (
    AS_OF,
    WalletSpec,
    assert_balances_match_ledger,
    balances,
    ledger,
    run_once,
    seed,
    set_usage,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mistral"


def _rule(engine: Engine, wallet: str, **values: object) -> None:
    defaults: dict[str, object] = {
        "position": 0, "trigger": "interval", "interval": None, "method": "fixed",
        "paid_credits": Decimal(0), "granted_credits": Decimal(0), "threshold_credits": None,
        "target_ongoing_balance": None, "started_at": None,
    }
    defaults.update(values)
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                insert into wallet_recurring_rules (wallet_id, position, trigger, interval,
                  method, paid_credits, granted_credits, threshold_credits,
                  target_ongoing_balance, started_at)
                select id, :position, :trigger, :interval, :method, :paid_credits,
                  :granted_credits, :threshold_credits, :target_ongoing_balance, :started_at
                from wallets where code = :code
                """
            ),
            {**defaults, "code": wallet},
        )


def test_initial_top_up_pending_until_paid_and_never_reposted(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", paid="100", granted="25")]})
    run_once(engine, settle_paid=False)
    b = balances(engine)["a/main"]
    assert (b["credits"], b["pending"]) == (Decimal(25), Decimal(100))
    # The catalog changes the wallet's credits: the initial top-up is not posted again.
    with engine.begin() as conn:
        conn.execute(text("update wallets set paid_credits = 500"))
    run_once(engine, settle_paid=False)
    assert w.mark_paid(engine, "a") == 1
    assert w.mark_paid(engine, "a") == 0
    b = balances(engine)["a/main"]
    assert (b["credits"], b["pending"], b["cents"]) == (Decimal(125), 0, Decimal(12500))
    assert_balances_match_ledger(engine)


def test_manual_top_up_is_idempotent_by_key(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main"), WalletSpec("other", priority=1)]})
    with pytest.raises(w.WalletError, match="several wallets"):
        w.top_up(engine, "a", Decimal(1), Decimal(0))
    with pytest.raises(w.WalletError, match="unknown customer"):
        w.top_up(engine, "zz", Decimal(1), Decimal(0), wallet_code="main")
    with pytest.raises(w.WalletError, match="positive"):
        w.top_up(engine, "a", Decimal(0), Decimal(0), wallet_code="main")
    for _ in range(2):
        done = w.top_up(engine, "a", Decimal("10"), Decimal("2.5"), wallet_code="main",
                        settle_paid=False, key="req-1")
    assert done.posted == 0  # the retried request posted nothing
    b = balances(engine)["a/main"]
    assert (b["credits"], b["pending"]) == (Decimal("2.5"), Decimal(10))
    assert w.mark_paid(engine, "a", wallet_code="main") == 1
    assert balances(engine)["a/main"]["credits"] == Decimal("12.5")


def test_interval_top_up_once_per_interval(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main")]})
    start = datetime(2025, 3, 3, tzinfo=UTC)
    _rule(engine, "main", interval="weekly", granted_credits=Decimal(5), paid_credits=Decimal(1),
          started_at=start)
    for hours in (0, 1, 30, 6 * 24):
        run_once(engine, start + timedelta(hours=hours))
    assert balances(engine)["a/main"]["credits"] == Decimal(6)
    run_once(engine, start + timedelta(days=7, hours=1))
    run_once(engine, start + timedelta(days=8))
    assert balances(engine)["a/main"]["credits"] == Decimal(12)
    keys = [k for k, *_ in ledger(engine) if k.startswith("interval:")]
    assert len(keys) == 4  # two intervals x (granted, paid)


def test_threshold_top_up_fixed_once_per_crossing(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="10")]})
    _rule(engine, "main", trigger="threshold", threshold_credits=Decimal(5),
          paid_credits=Decimal(20))
    set_usage(engine, "a", 400)
    run_once(engine, settle_paid=False)
    b = balances(engine)["a/main"]
    assert (b["credits"], b["pending"]) == (Decimal(6), 0)
    set_usage(engine, "a", 600)
    first = run_once(engine, settle_paid=False)
    assert first["threshold"] == 1
    # Still pending payment: the ongoing balance (with pending) is above the threshold.
    assert run_once(engine, settle_paid=False)["threshold"] == 0
    b = balances(engine)["a/main"]
    assert (b["credits"], b["pending"]) == (Decimal(4), Decimal(20))
    w.mark_paid(engine, "a")
    set_usage(engine, "a", 2600)  # 24 - 20 = 4 credits: the second crossing
    assert run_once(engine, settle_paid=True)["threshold"] == 1
    assert balances(engine)["a/main"]["credits"] == Decimal(24)
    assert len([k for k, *_ in ledger(engine) if k.startswith("threshold:")]) == 2


def test_threshold_top_up_target(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="10")]})
    _rule(engine, "main", trigger="threshold", method="target", threshold_credits=Decimal(3),
          target_ongoing_balance=Decimal(50))
    set_usage(engine, "a", 850)
    run_once(engine)
    b = balances(engine)["a/main"]
    assert b["credits"] == Decimal(50)  # 1.5 left, topped up by 48.5 to the target


def test_expiry_voids_what_is_left_and_terminates(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("old", paid="7", granted="10", priority=1,
                                   expiration_at=AS_OF - timedelta(minutes=1)),
                        WalletSpec("new", granted="100", priority=2)]})
    w.open_wallets(engine, AS_OF - timedelta(days=1), settle_paid=False)
    set_usage(engine, "a", 300)
    result = run_once(engine)
    assert len(result["expired"]) == 1
    b = balances(engine)
    assert (b["a/old"]["credits"], b["a/old"]["pending"]) == (0, 0)
    assert b["a/new"]["credits"] == Decimal(97)  # usage went to the remaining wallet
    with engine.connect() as conn:
        status = conn.execute(text("select code, status from wallets order by code")).all()
        voided = conn.execute(text(
            "select source, status, credits from wallet_transactions"
            " where source in ('expiration') or status = 'voided' order by id")).all()
    assert [tuple(s) for s in status] == [("new", "active"), ("old", "terminated")]
    assert sorted(tuple(v) for v in voided) == [
        ("expiration", "settled", Decimal(10)), ("initial", "voided", Decimal(7)),
    ]
    assert run_once(engine)["expired"] == []
    assert_balances_match_ledger(engine)


def test_alerts_once_per_crossing(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="10")]})
    w.add_alert_rule(engine, "balance_below", Decimal(5))
    set_usage(engine, "a", 600)  # 4 credits left: below 5
    assert run_once(engine)["alerts"].opened == 1
    assert run_once(engine)["alerts"].opened == 0
    set_usage(engine, "a", 1000)  # 0 left: depleted (a new rule), still below (same crossing)
    assert run_once(engine)["alerts"].opened == 1
    w.top_up(engine, "a", Decimal(0), Decimal(20), settle_paid=True, key="t")
    recovered = run_once(engine)["alerts"]
    assert (recovered.opened, recovered.resolved) == (0, 2)
    set_usage(engine, "a", 2700)  # 3 left: second crossing of "below"
    assert run_once(engine)["alerts"].opened == 1
    with engine.connect() as conn:
        rows = conn.execute(text(
            "select kind, crossing, resolved_at is null from wallet_alerts order by id")).all()
    assert [tuple(r) for r in rows] == [
        ("balance_below", 1, False), ("balance_depleted", 1, False), ("balance_below", 2, True),
    ]
    pending = w.pending_alert_events(engine, limit=2)
    assert (pending.total, len(pending.alerts)) == (3, 2)
    assert pending.by_kind == {"balance_below": 2, "balance_depleted": 1}
    event = w.alert_event(pending.alerts[0])
    assert mismatches(event, PrefectEvent) == []
    assert mismatches(w.alerts_summary_event(pending, 1), PrefectEvent) == []
    assert event["event"] == "tallyflow.wallet.balance-low"
    assert event["resource"]["prefect.resource.id"].startswith("tallyflow.wallet.")
    assert w.alerts_summary_event(pending, 1)["payload"]["alerts"] == 3
    w.mark_alerts_emitted(engine, pending.up_to_id)
    assert w.pending_alert_events(engine).total == 0


def test_mistral_demo_wallet_after_usage(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.folding import fold_pending
    from tallyflow.tasks.usage import due_subscriptions, snapshot_subscriptions
    from tests.tasks.rating_fixtures import ingest_events, token_event

    result = apply_catalog(engine, [EXAMPLE])
    assert result.ok, result.errors
    assert apply_catalog(engine, [EXAMPLE]).changed is False
    # 2,000,000 mistral-small input tokens at $1 per 1M, ingested and snapshotted for real
    # (the wallet overview rates usage live from them).
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_000)])
    fold_pending(engine)
    snapshot_subscriptions(engine, due_subscriptions(engine, AS_OF), AS_OF)
    run_once(engine, AS_OF, settle_paid=True)
    run_once(engine, AS_OF, settle_paid=True)
    overview = w.wallet_overview(engine, "acme", AS_OF)
    [wallet] = overview["wallets"]
    assert wallet["credits_balance"] == "123.00000"
    assert wallet["balance_cents"] == 12300
    assert wallet["consumed_credits"] == "2.00000" and wallet["consumed_amount_cents"] == 200
    assert wallet["credits_ongoing_balance"] == "123.00000"
    assert wallet["ongoing_usage_balance_cents"] == 200
    assert overview["ongoing_usage"]["undeducted_cents"] == 0
    assert [t["source"] for t in overview["wallet_transactions"]] == [
        "usage", "initial", "initial",
    ]
