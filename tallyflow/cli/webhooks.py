"""``tallyflow webhooks``: endpoints, the organization's signing key, the delivery log.

- ``endpoints add URL [--name N] [--event-type T ...]``, ``endpoints list``,
  ``endpoints remove ID``: where webhooks go (as Lago's ``/webhook_endpoints``);
- ``key``: the organization id and HMAC key receivers verify ``X-Lago-Signature`` with;
- ``deliveries [--status S] [--limit N] [--json]``: the newest webhooks and how their delivery
  went; ``deliveries ID``: one webhook's every attempt;
- ``deliver``: send the due webhooks now (the ``deliver-webhooks`` flow's work, scheduled
  every minute when served);
- ``redeliver ID``: one more attempt of a webhook not delivered (docs/webhooks.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from tallyflow.infra.resources import billing_engine
from tallyflow.models.webhooks import STATUSES, WEBHOOK_TYPES

if TYPE_CHECKING:
    from tallyflow.models.lago.resources import WebhookDelivery

app = typer.Typer(help="Webhooks: endpoints, the signing key, deliveries and redelivery.")
endpoints_app = typer.Typer(help="Where webhooks are sent.")
app.add_typer(endpoints_app, name="endpoints")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="webhooks")


@endpoints_app.command("add")
def add(
    url: str = typer.Argument(..., help="The receiver's http(s) URL."),
    name: str | None = typer.Option(None, "--name", help="A name for people."),
    event_types: list[str] | None = typer.Option(
        None, "--event-type", help="Only these webhook types (repeat; default: every type): "
        + ", ".join(WEBHOOK_TYPES) + "."),
) -> None:
    """Add an endpoint; the first one also makes the organization's signing key."""
    from tallyflow.tasks.webhooks import add_endpoint

    fields: dict[str, object] = {"webhook_url": url}
    if name is not None:
        fields["name"] = name
    if event_types:
        fields["event_types"] = list(event_types)
    endpoint = add_endpoint(billing_engine(), fields)
    typer.echo(f"{endpoint['lago_id']}  {endpoint['webhook_url']}"
               f"  ({', '.join(endpoint['event_types'] or ['every type'])})")


@endpoints_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Lago's JSON shape.")) -> None:
    """The live endpoints."""
    from tallyflow.tasks.webhooks import list_endpoints

    endpoints, _ = list_endpoints(billing_engine(), 1, 100)
    if as_json:
        typer.echo(json.dumps({"webhook_endpoints": endpoints}))
        return
    if not endpoints:
        typer.echo("no webhook endpoints (tallyflow webhooks endpoints add URL)")
    for e in endpoints:
        typer.echo(f"{e['lago_id']}  {e['webhook_url']}  {e['name'] or ''}"
                   f"  ({', '.join(e['event_types'] or ['every type'])})")


@endpoints_app.command("remove")
def remove(lago_id: str = typer.Argument(..., help="The endpoint's lago_id.")) -> None:
    """Remove an endpoint: nothing more is sent to it (its undelivered webhooks end failed)."""
    from tallyflow.tasks.webhooks import remove_endpoint

    endpoint = remove_endpoint(billing_engine(), lago_id)
    typer.echo(f"removed {endpoint['lago_id']}  {endpoint['webhook_url']}")


@app.command("key")
def key() -> None:
    """The organization id and the HMAC key that signs every webhook (X-Lago-Signature):
    give the key to the receivers."""
    from tallyflow.tasks.webhooks import signing_key

    signing = signing_key(billing_engine())
    typer.echo(f"organization_id: {signing.organization_id}")
    typer.echo(f"hmac_key: {signing.hmac_key}")


@app.command("deliveries")
def deliveries(
    lago_id: str | None = typer.Argument(None, help="One webhook: show its every attempt."),
    status: str | None = typer.Option(None, "--status",
                                      help="Only this status: " + ", ".join(STATUSES) + "."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The delivery log: the newest webhooks and their state, or one webhook's attempts."""
    from tallyflow.tasks.webhooks import list_webhooks, webhook_attempts

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"{status!r} is not one of {', '.join(STATUSES)}",
                                 param_hint="--status")
    engine = billing_engine()
    if lago_id is not None:
        webhook, attempts = webhook_attempts(engine, lago_id)
        if as_json:
            typer.echo(json.dumps({"webhook": webhook, "attempts": attempts}))
            return
        _line(webhook)
        for a in attempts:
            typer.echo(f"  #{a['attempt']}  {a['started_at']}  {a['milliseconds']} ms"
                       f"  {a['http_status'] or '-'}  {a['error'] or ''}")
        return
    webhooks = list_webhooks(engine, status, limit)
    if as_json:
        typer.echo(json.dumps({"webhooks": webhooks}))
        return
    if not webhooks:
        typer.echo("no webhooks")
    for w in webhooks:
        _line(w)


def _line(w: WebhookDelivery) -> None:
    typer.echo(f"{w['lago_id']}  {w['webhook_type']}  {w['status']}  attempts {w['attempts']}"
               f"  {w['http_status'] or '-'}  {w['endpoint']}"
               + (f"  next {w['next_attempt_at']}" if w["next_attempt_at"] else "")
               + (f"  ({w['last_error']})" if w["last_error"] else ""))


@app.command("deliver")
def deliver(limit: int = typer.Option(1000, "--limit", min=1,
                                      help="Send at most this many.")) -> None:
    """Send the due webhooks now, each once (retries wait for their backoff)."""
    from tallyflow.tasks.webhooks import deliver_pending

    summary = deliver_pending(billing_engine(), limit=limit)
    typer.echo(f"{summary.succeeded} delivered, {summary.retrying} to retry,"
               f" {summary.failed} failed for good")


@app.command("redeliver")
def redeliver(lago_id: str = typer.Argument(..., help="The webhook's lago_id "
                                            "(its X-Lago-Unique-Key).")) -> None:
    """Try a webhook not delivered once more, now (a failed one stays failed if this attempt
    fails too)."""
    from tallyflow.tasks.webhooks import deliver_pending, requeue, webhook_attempts

    engine = billing_engine()
    requeue(engine, lago_id)
    deliver_pending(engine, only=[lago_id])
    webhook, _ = webhook_attempts(engine, lago_id)
    _line(webhook)
    if webhook["status"] != "succeeded":
        raise typer.Exit(1)
