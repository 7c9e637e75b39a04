"""``tallyflow webhooks`` through the CLI: endpoints, the key, the delivery log, delivery and
redelivery against a real local receiver, and refusals as one line with a hint."""

from __future__ import annotations

import json

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.webhooks import enqueue
from tests.tasks.webhooks.receiver import receiving

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_endpoints_key_deliveries_and_redelivery(engine: Engine) -> None:
    with receiving(fail_first=1) as receiver:
        added = _ok(["webhooks", "endpoints", "add", receiver.url, "--name", "erp",
                     "--event-type", "invoice.created"])
        endpoint_id = added.split()[0]
        assert "invoice.created" in added
        listed = json.loads(_ok(["webhooks", "endpoints", "list", "--json"]))
        assert [e["name"] for e in listed["webhook_endpoints"]] == ["erp"]
        key = _ok(["webhooks", "key"])
        receiver.key = key.split("hmac_key: ")[1].strip()
        with engine.begin() as conn:
            enqueue(conn, "invoice.created", "invoice", {"lago_id": "i1"})
        assert "0 delivered, 1 to retry" in _ok(["webhooks", "deliver"])
        [webhook] = json.loads(_ok(["webhooks", "deliveries", "--json"]))["webhooks"]
        assert webhook["status"] == "retrying"
        assert webhook["lago_id"] in _ok(["webhooks", "deliveries", "--status", "retrying"])
        redelivered = _ok(["webhooks", "redeliver", webhook["lago_id"]])
        assert "succeeded" in redelivered
        attempts = json.loads(_ok(["webhooks", "deliveries", webhook["lago_id"], "--json"]))
        assert [a["http_status"] for a in attempts["attempts"]] == [500, 200]
    again = runner.invoke(app, ["webhooks", "redeliver", webhook["lago_id"]])
    assert again.exit_code == 1 and "delivered already" in again.output
    assert "hint:" in again.output
    refused = runner.invoke(app, ["webhooks", "endpoints", "add", "ftp://x"])
    assert refused.exit_code == 1 and "webhook_url: url_invalid" in refused.output
    assert "removed" in _ok(["webhooks", "endpoints", "remove", endpoint_id])
    gone = runner.invoke(app, ["webhooks", "endpoints", "remove", endpoint_id])
    assert gone.exit_code == 1 and "unknown webhook endpoint" in gone.output
