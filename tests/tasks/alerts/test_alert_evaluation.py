"""Usage alerts evaluated against real Postgres: thresholds crossed trigger once however often
evaluation reruns, usage lowered by a void and crossing again triggers again, and the
``alert.triggered`` webhook carries Lago's triggered alert (lago-api
spec/services/usage_monitoring/process_alert_service_spec.rb,
spec/services/webhooks/usage_monitoring/alert_triggered_service_spec.rb)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import TriggeredAlert, UsageAlert
from tallyflow.tasks.alerts import create_alert, evaluate_alerts, list_alerts, triggered_alerts
from tallyflow.tasks.corrections import EventKey, void_and_rerate
from tallyflow.tasks.usage import rated_usage
from tallyflow.tasks.webhooks import add_endpoint
from tests.tasks.invoicing.test_invoicing import catalog, usage_events

SUB = "sub_acme_001"
WHEN = datetime(2025, 3, 10, tzinfo=UTC)
AT = datetime(2025, 3, 20, tzinfo=UTC)


def _webhooks(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(b) for b in conn.execute(text(
            "select body from webhooks where webhook_type = 'alert.triggered' order by id"))
            .scalars()]


def _crossed(engine: Engine) -> list[list[str]]:
    with engine.connect() as conn:
        return [[t["code"] for t in a["crossed_thresholds"]]
                for a in triggered_alerts(conn, SUB)]


def test_crossings_trigger_once_and_again_after_a_void(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, wallet=False)
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks"})
    usage_events(engine, tmp_path, WHEN)  # not folded: current usage reads pending events
    amount = rated_usage(engine, SUB, AT).amount_cents
    assert amount > 2
    create_alert(engine, SUB, {"alert_type": "current_usage_amount", "code": "spend",
                               "name": "Spend", "thresholds": [
                                   {"code": "half", "value": amount // 2},
                                   {"code": "full", "value": amount},
                                   {"code": "more", "value": amount + 1}]})
    create_alert(engine, SUB, {"alert_type": "billable_metric_current_usage_units",
                               "code": "tokens", "billable_metric_code": "mistral_tokens",
                               "thresholds": [{"code": "k", "value": 1000}]})
    run = evaluate_alerts(engine, AT)
    assert (run.subscriptions, len(run.triggered), run.failed) == (1, 2, [])
    assert sorted(_crossed(engine)) == [["half", "full"], ["k"]]
    [spend] = list_alerts(engine, SUB, "spend")
    assert spend["previous_value"] == str(amount)
    # Rerun, and a late evaluator that read usage earlier: nothing more.
    assert evaluate_alerts(engine, AT).triggered == []
    assert evaluate_alerts(engine, WHEN).triggered == []
    hooks = _webhooks(engine)
    assert len(hooks) == 2 and hooks[0]["object_type"] == "triggered_alert"
    triggered = next(h["triggered_alert"] for h in hooks
                     if h["triggered_alert"]["alert_code"] == "spend")
    assert triggered["external_subscription_id"] == SUB
    assert triggered["alert_type"] == "current_usage_amount"
    assert triggered["current_value"] == str(amount) and triggered["previous_value"] == "0"
    assert triggered["crossed_thresholds"][0] == {"code": "half", "value": str(amount // 2),
                                                  "recurring": False}
    assert triggered["lago_organization_id"] == hooks[0]["organization_id"]
    assert set(triggered) >= {"lago_id", "lago_alert_id", "external_customer_id",
                              "billable_metric_code", "alert_name", "triggered_at"}
    assert [mismatches(h["triggered_alert"], TriggeredAlert) for h in hooks] == [[], []]
    assert mismatches(spend, UsageAlert) == []
    # A void lowers usage: nothing triggers, the alert keeps the lower value ...
    later = datetime(2025, 3, 21, tzinfo=UTC)
    void_and_rerate(engine, [EventKey(SUB, "e1"), EventKey(SUB, "e2")], "test", "mistake", later)
    assert evaluate_alerts(engine, later).triggered == []
    assert list_alerts(engine, SUB, "spend")[0]["previous_value"] == "0"
    # ... and usage coming back crosses the same thresholds again (Lago's rule).
    usage_events(engine, tmp_path, WHEN, prefix="f")
    again = datetime(2025, 3, 22, tzinfo=UTC)
    assert len(evaluate_alerts(engine, again).triggered) == 2
    assert _crossed(engine)[-2:] in ([["half", "full"], ["k"]], [["k"], ["half", "full"]])


def test_a_crash_before_the_commit_leaves_nothing_and_is_contained(
        engine: Engine, tmp_path: Path, monkeypatch: Any) -> None:
    from tallyflow.tasks.alerts import evaluate as evaluation

    catalog(engine, tmp_path, wallet=False)
    usage_events(engine, tmp_path, WHEN)
    create_alert(engine, SUB, {"alert_type": "current_usage_amount", "code": "spend",
                               "thresholds": [{"code": "one", "value": 1}]})

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("killed between the triggered alert and the commit")

    monkeypatch.setattr(evaluation, "enqueue", crash)
    run = evaluate_alerts(engine, AT)
    assert run.triggered == [] and [sub for sub, _ in run.failed] == [SUB]
    assert _crossed(engine) == [] and list_alerts(engine, SUB)[0]["previous_value"] == "0"
    monkeypatch.undo()
    assert len(evaluate_alerts(engine, AT).triggered) == 1
    assert evaluate_alerts(engine, AT).triggered == []
    assert _crossed(engine) == [["one"]]
