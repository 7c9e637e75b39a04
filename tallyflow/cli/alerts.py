"""``tallyflow alerts``: usage alerts on subscriptions (docs/alerts.md).

- ``list SUB [--json]``, ``create SUB --type T --code C [--metric M] [--name N]
  --threshold V[:CODE] ... [--recurring V[:CODE]]``, ``delete SUB CODE``: the alerts, as
  Lago's ``/subscriptions/{external_id}/alerts``;
- ``triggered [SUB] [--json]``: the alerts triggered, as their ``alert.triggered`` webhook
  carries them;
- ``evaluate [SUB ...]``: evaluate now (the ``deliver-webhooks`` flow does it every minute).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer

from tallyflow.infra.resources import billing_engine
from tallyflow.models.alerts import ALERT_TYPES

app = typer.Typer(help="Usage alerts on subscriptions: list, create, delete, triggered.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="alerts")


def _threshold(text: str, recurring: bool) -> dict[str, object]:
    value, _, code = text.partition(":")
    return {"value": value, "code": code or None, "recurring": recurring}


@app.command("list")
def list_(subscription: str = typer.Argument(..., help="The subscription's external id."),
          as_json: bool = typer.Option(False, "--json", help="Lago's JSON shape.")) -> None:
    """The live alerts of a subscription."""
    from tallyflow.tasks.alerts import list_alerts

    alerts = list_alerts(billing_engine(), subscription)
    if as_json:
        typer.echo(json.dumps({"alerts": alerts}))
        return
    if not alerts:
        typer.echo(f"no alerts on {subscription} (tallyflow alerts create)")
    for a in alerts:
        metric = f" {a['billable_metric']['code']}" if a["billable_metric"] else ""
        values = ", ".join(t["value"] + (" recurring" if t["recurring"] else "")
                           for t in a["thresholds"])
        typer.echo(f"{a['code']}  {a['alert_type']}{metric}  [{values}]"
                   f"  previous {a['previous_value']}")


@app.command("create")
def create(
    subscription: str = typer.Argument(..., help="The subscription's external id."),
    alert_type: str = typer.Option(..., "--type", help="One of " + ", ".join(ALERT_TYPES)
                                   + " (lifetime_usage_amount is refused: docs/alerts.md)."),
    code: str = typer.Option(..., "--code", help="The alert's code (unique per subscription)."),
    metric: str | None = typer.Option(None, "--metric", help="The billable metric's code "
                                      "(billable_metric_* types)."),
    name: str | None = typer.Option(None, "--name", help="A name for people."),
    thresholds: list[str] | None = typer.Option(None, "--threshold",
                                                help="VALUE[:CODE], repeat."),
    recurring: str | None = typer.Option(None, "--recurring", help="VALUE[:CODE]: every "
                                         "further VALUE past the highest threshold."),
) -> None:
    """Create an alert (amounts in cents, units as counted)."""
    from tallyflow.tasks.alerts import create_alert

    body: dict[str, Any] = {"alert_type": alert_type, "code": code, "name": name,
                            "thresholds": [_threshold(t, False) for t in thresholds or []]
                            + ([_threshold(recurring, True)] if recurring else [])}
    if metric:
        body["billable_metric_code"] = metric
    alert = create_alert(billing_engine(), subscription, body)
    typer.echo(f"created {alert['code']} ({alert['lago_id']}) on {subscription}")


@app.command("delete")
def delete(subscription: str = typer.Argument(..., help="The subscription's external id."),
           code: str = typer.Argument(..., help="The alert's code.")) -> None:
    """Delete an alert (its triggered alerts stay)."""
    from tallyflow.tasks.alerts import delete_alert

    alert = delete_alert(billing_engine(), subscription, code)
    typer.echo(f"deleted {alert['code']} ({alert['lago_id']})")


@app.command("triggered")
def triggered(subscription: str | None = typer.Argument(None, help="Only this subscription."),
              as_json: bool = typer.Option(False, "--json", help="Lago's JSON shape.")) -> None:
    """The alerts triggered, oldest first."""
    from tallyflow.tasks.alerts import triggered_alerts

    with billing_engine().connect() as conn:
        found = triggered_alerts(conn, subscription)
    if as_json:
        typer.echo(json.dumps({"triggered_alerts": found}))
        return
    for t in found:
        crossed = ", ".join(c["value"] for c in t["crossed_thresholds"])
        typer.echo(f"{t['triggered_at']}  {t['external_subscription_id']}  {t['alert_code']}"
                   f"  {t['previous_value']} -> {t['current_value']}  crossed [{crossed}]")


@app.command("evaluate")
def evaluate(subscriptions: list[str] | None = typer.Argument(None, help="Only these.")) -> None:
    """Evaluate the alerts now (the deliver-webhooks flow does it every minute)."""
    from tallyflow.tasks.alerts import evaluate_alerts

    run = evaluate_alerts(billing_engine(), datetime.now(UTC), subscriptions or None)
    typer.echo(f"{run.subscriptions} subscription(s) evaluated, {len(run.triggered)} alert(s)"
               f" triggered, {len(run.failed)} failed")
    for sub, error in run.failed:
        typer.echo(f"{sub}: {error}", err=True)
    if run.failed:
        raise typer.Exit(1)
