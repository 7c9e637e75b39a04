"""The notification texts of deployments/automations.yaml, rendered by Prefect's own templating
(the sandboxed environment and filters its send-notification action uses) against the events
Tallyflow's code emits: one human line plus details, never a dict repr or a bare driver error."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from prefect.events import Event
from prefect.server.events.actions import SendNotification
from prefect.server.events.schemas.events import Event as ServerEvent
from prefect.server.utilities.user_templates import render_user_template_sync
from sqlalchemy import Engine

from tallyflow.deployments.automations import automation_specs
from tallyflow.models.wallets import ALERT_BELOW, ALERT_DEPLETED
from tallyflow.tasks.runs.containment import contained_event, failure
from tallyflow.tasks.wallets import PendingAlerts, alert_event, alerts_summary_event


def _render(automation: str, emitted: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) as the server renders them for this event (no flow run in context)."""
    SendNotification._register_filters_if_needed()  # type: ignore[attr-defined]
    spec = next(s for s in automation_specs() if s["name"] == automation)
    action = next(a for a in spec["actions"] if a["type"] == "send-notification")
    # What emit_event sends (prefect.events.Event) as the server receives it.
    sent = Event(**emitted, occurred=datetime(2026, 11, 27, 10, tzinfo=UTC))
    event = ServerEvent.model_validate(sent.model_dump(mode="json")).receive()
    context = {"event": event, "flow_run": None}
    return (render_user_template_sync(action["subject"], context),
            render_user_template_sync(action["body"], context))


def _alert(kind: str, balance: str, threshold: str | None) -> dict[str, Any]:
    return {"kind": kind, "wallet_id": 7, "wallet_code": "prepaid",
            "external_customer_id": "acme", "crossing": 1,
            "credits_balance": Decimal(balance),
            "threshold_credits": None if threshold is None else Decimal(threshold),
            "as_of": datetime(2026, 11, 27, 10, tzinfo=UTC),
            "currency": "EUR", "rate_amount": Decimal("0.5")}


def test_a_low_wallet_reads_as_a_sentence_with_money_in_its_currency() -> None:
    subject, body = _render("tallyflow-wallet-alert",
                            alert_event(_alert(ALERT_BELOW, "4.5", "10")))
    assert subject == "Tallyflow: wallet prepaid of acme is low"
    lines = body.strip().splitlines()
    assert lines[0] == "Customer acme: wallet prepaid fell below its alert threshold."
    # 4.5 credits at 0.50 EUR a credit: 2.25 EUR; the threshold 10 credits: 5.00 EUR
    assert lines[1] == ("Balance: 2.25 EUR (4.50000 credits); "
                        "threshold 5.00 EUR (10.00000 credits).")
    assert "{" not in body and "'" not in body  # no dict repr


def test_an_alert_without_its_wallet_s_money_still_reads_in_credits() -> None:
    alert = {**_alert(ALERT_BELOW, "4.5", "10"), "currency": None}
    _, body = _render("tallyflow-wallet-alert", alert_event(alert))
    assert "Balance: 4.50000 credits; threshold 10.00000 credits." in body


def test_a_depleted_wallet_and_the_summary_of_many() -> None:
    subject, body = _render("tallyflow-wallet-alert",
                            alert_event(_alert(ALERT_DEPLETED, "0", None)))
    assert subject == "Tallyflow: wallet prepaid of acme is depleted"
    assert "Balance: 0.00 EUR (0.00000 credits)." in body
    pending = PendingAlerts([{}] * 3, 40, {ALERT_BELOW: 30, ALERT_DEPLETED: 10}, 99)
    subject, body = _render("tallyflow-wallet-alert", alerts_summary_event(pending, 5))
    assert subject == "Tallyflow: 40 more wallet alerts"
    assert "40 wallet alerts in one run; 3 were announced one by one" in body
    assert f"{ALERT_BELOW} 30, {ALERT_DEPLETED} 10" in body


def test_a_contained_database_failure_names_the_customer_and_carries_the_hint() -> None:
    error = psycopg.OperationalError("connection to server at 127.0.0.1 failed: refused")
    item = failure("wallet-deductions", "customer", 3, "acme", "acme", error)
    subject, body = _render("tallyflow-contained-failure", contained_event(item, None))
    assert subject == "Tallyflow: wallet-deductions failed for acme"
    assert body.startswith("The customer acme failed in wallet-deductions; "
                           "every other unit completed.")
    assert "\nHint: is PostgreSQL running and reachable? check TALLYFLOW_DATABASE_URL" in body
    assert "Error: OperationalError: connection to server" in body


def test_every_automation_template_is_valid_for_prefect() -> None:
    from prefect.server.utilities.user_templates import validate_user_template

    for spec in automation_specs():
        for action in spec["actions"]:
            for key in ("subject", "body"):
                if key in action:
                    validate_user_template(action[key])


def test_the_alert_a_billing_run_emits_reads_with_its_money(engine: Engine) -> None:
    """End to end: a wallet crosses its threshold in a wallet run; the event the run would
    emit (read back as the flow reads it) renders with the wallet's currency."""
    from tallyflow.tasks import wallets as w
    from tests.tasks.wallets.test_wallets_support import WalletSpec, run_once, seed, set_usage

    seed(engine, {"a": [WalletSpec("main", granted="10", rate="2")]})
    w.add_alert_rule(engine, "balance_below", Decimal(5))
    set_usage(engine, "a", 1200)  # 12.00 USD at 2 USD a credit: 6 credits used, 4 left
    assert run_once(engine)["alerts"].opened == 1
    pending = w.pending_alert_events(engine)
    subject, body = _render("tallyflow-wallet-alert", alert_event(pending.alerts[0]))
    assert subject == "Tallyflow: wallet main of a is low"
    assert ("Balance: 8.00 USD (4.00000 credits); threshold 10.00 USD (5.00000 credits)."
            in body), body


def test_a_failed_run_s_notice_carries_the_hint() -> None:
    """The run-failed notice quotes the run's state message: for a run that failed on an
    explained error, that message leads with the one line and its hint."""
    from uuid import uuid4

    from prefect.server.schemas.core import Flow, FlowRun
    from prefect.server.schemas.states import Failed

    from tallyflow.errors import explain

    SendNotification._register_filters_if_needed()  # type: ignore[attr-defined]
    spec = next(s for s in automation_specs() if s["name"] == "tallyflow-run-failed")
    action = next(a for a in spec["actions"] if a["type"] == "send-notification")
    message, hint = explain(psycopg.OperationalError("connection refused"))
    flow_id = uuid4()
    run = FlowRun(id=uuid4(), flow_id=flow_id, name="billing 2026-11-27T10:00Z",
                  state=Failed(message=f"{message}. Hint: {hint}."))
    context = {"flow": Flow(id=flow_id, name="billing-cycle"), "flow_run": run, "event": None}
    subject = render_user_template_sync(action["subject"], context)
    body = render_user_template_sync(action["body"], context)
    assert subject == "Tallyflow: billing-cycle run billing 2026-11-27T10:00Z is Failed"
    why = next(line for line in body.splitlines() if line.startswith("Why: "))
    assert why == ("Why: cannot reach the database: connection refused. Hint: is PostgreSQL"
                   " running and reachable? check TALLYFLOW_DATABASE_URL"
                   " (postgresql://user:password@host:5432/db), or unset it to use the embedded"
                   " database.")
