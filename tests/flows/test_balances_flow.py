"""The ``refresh-balances`` flow as Prefect runs it (deployment ``balances``, every minute):
one pass keeps the running balance, the wallet alerts are evaluated on it, and a depleted
ongoing balance gives the Lago webhook and the operator's Prefect event (the automations'
``tallyflow.wallet.balance-depleted``) from the same evaluation, once; recorded in the run
history as ``balances`` (docs/architecture.md §21)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows import alert_events
from tallyflow.flows.balances import refresh_balances
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import BalanceRunSummary
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.webhooks import add_endpoint
from tests.tasks.rating_fixtures import load_rows
from tests.tasks.usage.test_rating_state import _catalog
from tests.tasks.wallets.test_balance import _rows
from tests.tasks.wallets.test_one_balance_path import _wallet

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_flow_refreshes_then_alerts_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(alert_events, "emit_event", lambda **event: emitted.append(event))
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks"})
    # an event of the current period (the flow rates at the wall clock)
    now = datetime.now(UTC) - timedelta(seconds=5)
    load_rows(
        engine,
        [
            {
                "sub": "s_month",
                "txn": "t1",
                "code": "m_sum",
                "ts": now,
                "properties": {"v": 100, "model": "a"},
            }
        ],
    )
    first = refresh_balances()
    assert mismatches(first, BalanceRunSummary) == []
    assert first["rated"] >= 1 and first["alerts"] == 0
    usage = _rows(engine)["s_month"][0]
    assert usage > 0
    _wallet(engine, usage - 1)  # settled balance positive, the ongoing one a cent short
    second = refresh_balances()
    assert (second["alerts"], second["events_emitted"]) == (1, 1)
    assert [e["event"] for e in emitted] == ["tallyflow.wallet.balance-depleted"]
    third = refresh_balances()
    assert (third["alerts"], third["events_emitted"]) == (0, 0) and len(emitted) == 1
    with engine.connect() as conn:
        assert (
            conn.execute(
                text(
                    "select count(*) from webhooks"
                    " where webhook_type = 'wallet.depleted_ongoing_balance'"
                )
            ).scalar_one()
            == 1
        )
        assert (
            conn.execute(
                text("select count(*) from wallet_alerts where emitted_at is null")
            ).scalar_one()
            == 0
        )
        assert (
            conn.execute(text("select status from run_history where kind = 'balances'"))
            .scalars()
            .all()
            == ["completed"] * 3
        )
