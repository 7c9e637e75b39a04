"""Real Prefect runs of ``wallet-deductions``: reruns converge, a dropped database connection is
retried by the task, run history and alert events are recorded."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection, Engine, text

from tallyflow.flows.wallet_deductions import wallet_deductions
from tallyflow.infra import failpoints
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import WalletRunSummary
from tallyflow.tasks import wallets as w
from tests.tasks.wallets.test_wallets_support import (
    AS_OF,
    WalletSpec,
    assert_balances_match_ledger,
    balances,
    ledger,
    seed,
    set_usage,
)


def test_same_hour_three_runs_one_ledger_and_run_history(
    engine: Engine, prefect_harness: None
) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="10", paid="5")],
                  "b": [WalletSpec("main", granted="1")]})
    w.add_alert_rule(engine, "balance_below", Decimal(2))
    set_usage(engine, "a", 300)
    set_usage(engine, "b", 150)
    first = wallet_deductions(as_of=AS_OF, settle_paid=True, batch_size=1)
    assert first["customers"] == 2 and first["transactions"] == 2
    assert first["negative_wallets"] == 1 and first["negative"][0]["external_customer_id"] == "b"
    assert first["alerts"] == 2 and first["events_emitted"] == 2  # b: below 2, depleted
    assert first["top"] and mismatches(first, WalletRunSummary) == []
    once = ledger(engine)
    for _ in range(2):
        again = wallet_deductions(as_of=AS_OF, settle_paid=True)
        assert again["transactions"] == 0 and again["alerts"] == 0
    assert ledger(engine) == once
    assert balances(engine)["a/main"]["credits"] == Decimal(12)
    assert_balances_match_ledger(engine)
    with engine.connect() as conn:
        runs = conn.execute(text(
            "select status, customers, transactions, flow_run_id is not null, as_of"
            " from wallet_runs order by id")).all()
        emitted = conn.execute(text(
            "select count(*) from wallet_alerts where emitted_at is null")).scalar_one()
    assert [tuple(r)[:4] for r in runs] == [
        ("completed", 2, 2, True), ("completed", 0, 0, True), ("completed", 0, 0, True),
    ]
    assert all(r.as_of == AS_OF for r in runs) and emitted == 0


def test_dropped_connection_is_retried_and_the_run_succeeds(
    engine: Engine, prefect_harness: None
) -> None:
    seed(engine, {f"c{i}": [WalletSpec("main", granted="20")] for i in range(6)})
    for i in range(6):
        set_usage(engine, f"c{i}", 100 * (i + 1))
    calls = {"n": 0}

    def drop_connection(conn: Connection) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the first attempt loses its connection after posting
            pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
            with engine.connect() as other:
                other.execute(text("select pg_terminate_backend(:p)"), {"p": pid})

    with failpoints.hooked("wallets.deduct_posted", drop_connection):
        summary = wallet_deductions(as_of=AS_OF, settle_paid=True)
    assert calls["n"] == 2  # one retry of the same batch
    assert summary["customers"] == 6 and summary["transactions"] == 6
    for i in range(6):
        assert balances(engine)[f"c{i}/main"]["credits"] == Decimal(20) - (i + 1)
    assert_balances_match_ledger(engine)


def test_validation_error_fails_fast_and_is_recorded(
    engine: Engine, prefect_harness: None
) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="20")]})
    set_usage(engine, "a", 100)
    calls = {"n": 0}

    def bad_data(conn: Connection) -> None:
        calls["n"] += 1
        raise ValueError("bad data")

    with failpoints.hooked("wallets.deduct_locked", bad_data):
        state = wallet_deductions(as_of=AS_OF, return_state=True)
    assert state.is_failed() and calls["n"] == 1  # not retried
    with engine.connect() as conn:
        status, error = conn.execute(text("select status, error from wallet_runs")).one()
    assert status == "failed" and "bad data" in error
    assert wallet_deductions(as_of=AS_OF)["transactions"] == 1  # the next run catches up
