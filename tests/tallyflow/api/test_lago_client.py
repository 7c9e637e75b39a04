"""Lago's own Python client against a live `tallyflow api` on loopback: the Mistral catalog,
events one by one and in batches, current usage, a top-up, invoices; every number equals the
CLI's. And the crash the design is for: the API killed after its answer, before its load."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    Customer,
    Event,
    Plan,
    Subscription,
    Wallet,
    WalletTransaction,
)
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app as cli
from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest import SourceSpec
from tallyflow.tasks.invoicing import close_periods
from tests.tallyflow.api.conftest import LiveApi, wait_for
from tests.tallyflow.api.test_writes import DOCS
from tests.tasks.rating_fixtures import SUB

runner = CliRunner()
EVENTS = "select count(*) from events"


def cli_json(*args: str) -> Any:
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def lago(server: LiveApi, key: str) -> Client:
    return Client(api_key=key, api_url=f"{server.url}/")


def tokens(txn: str, count: int, model: str = "mistral-small", kind: str = "input") -> Event:
    return Event(transaction_id=txn, external_subscription_id=SUB, code="mistral_tokens",
                 timestamp=int(datetime.now(UTC).timestamp()),
                 properties={"tokens": count, "model": model, "type": kind})


def test_the_reference_scenario_with_lagos_client(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str
) -> None:
    server = live_api()
    client = lago(server, api_key)
    metric = client.billable_metrics.create(
        BillableMetric(**DOCS["billable_metric"]["billable_metric"]))
    client.plans.create(Plan(**DOCS["plan"]["plan"]))
    client.customers.create(Customer(**DOCS["customer"]["customer"]))
    client.subscriptions.create(Subscription(**DOCS["subscription"]["subscription"]))
    _the_sdk_way(client, metric.lago_id)
    wallet = client.wallets.create(Wallet(**DOCS["wallet"]["wallet"]))
    assert wallet is not None and wallet.credits_balance == "25.00000"

    singles = [tokens(f"one-{i}", 300_000, kind="output") for i in range(5)]
    for single in singles:  # one by one: 5 x 300k small output tokens
        client.events.create(single)
    for b in range(2):  # in batches: 2 x 100 x 10k large input tokens
        client.events.batch_create(BatchEvent(events=[
            tokens(f"batch-{b}-{i}", 10_000, model="mistral-large") for i in range(100)]))
    client.events.batch_create(BatchEvent(events=singles[:1]))  # a retry: a duplicate
    assert wait_for(engine, EVENTS, 205) == 205
    assert wait_for(engine, "select coalesce(sum(duplicates), 0) from ingest_objects", 1) == 1

    usage = client.customers.current_usage("acme", SUB)
    expected = cli_json("usage", SUB)
    # 1.5M small output at $3/M (package: 2 packages = $6) + 2M large input at $4/M = $8
    assert usage.amount_cents == expected["amount_cents"] == 1400
    assert usage.total_amount_cents == expected["total_amount_cents"]
    assert [(f.units, f.amount_cents) for c in usage.charges_usage for f in c.filters] == [
        (f["units"], f["amount_cents"]) for c in expected["charges_usage"] for f in c["filters"]]

    [found] = client.wallets.find_all({"external_customer_id": "acme"})["wallets"]
    posted = client.wallet_transactions.create(WalletTransaction(
        wallet_id=found.lago_id, paid_credits="10", granted_credits="5"))
    assert sorted(t.credit_amount for t in posted["wallet_transactions"]) == [
        "10.00000", "5.00000"]
    after = client.wallets.find(found.lago_id)
    shown = cli_json("wallets", "show", "acme")["wallets"][0]
    assert after.credits_balance == shown["credits_balance"] == "30.00000"
    assert after.ongoing_usage_balance_cents == shown["ongoing_usage_balance_cents"]
    listed = client.wallet_transactions.find_all(found.lago_id)
    assert len(listed["wallet_transactions"]) == listed["meta"]["total_count"] == 4

    march = datetime(2025, 3, 5, tzinfo=UTC)
    close_periods(engine, march, now=march)
    invoices = client.invoices.find_all({"per_page": 100})["invoices"]
    cli_invoices = cli_json("invoices", "list")["invoices"]
    assert [(i.lago_id, i.number, i.total_amount_cents) for i in invoices] == [
        (i["lago_id"], i["number"] or "", i["total_amount_cents"]) for i in cli_invoices]
    assert invoices and client.invoices.find(invoices[0].lago_id).lago_id == invoices[0].lago_id

    with pytest.raises(LagoApiError) as refused:
        lago(server, "tf_wrong").customers.find("acme")
    assert refused.value.status_code == 401
    with pytest.raises(LagoApiError) as missing:
        client.customers.find("nobody")
    assert missing.value.status_code == 404


def test_killed_after_the_answer_before_the_load_the_scheduled_ingest_loads_once(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, prefect_harness: None
) -> None:
    from tests.tasks.rating_fixtures import apply_mistral

    server = live_api(TALLYFLOW_FAILPOINTS="api.before_load=1:pause")
    apply_mistral(engine, server.bucket.parent)
    lago(server, api_key).events.batch_create(BatchEvent(events=[
        tokens(f"k{i}", 1_000) for i in range(50)]))  # answered: durably stored
    server.kill()  # before its loader ran (held at api.before_load)
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == 0
    source = SourceSpec(url=server.bucket.as_uri() + "/api")
    first = ingest_events(source)  # the scheduled ingest-events/api deployment's flow
    assert (first["objects"], first["accepted"]) == (1, 50)
    again = ingest_events(source)
    assert (again["objects"], again["accepted"]) == (0, 0)

    restarted = live_api()  # a new API process: nothing loaded twice, new events flow
    lago(restarted, api_key).events.create(tokens("after", 1_000))
    assert wait_for(engine, EVENTS, 51) == 51
    with engine.connect() as conn:
        assert conn.execute(text("select count(*), sum(accepted), sum(duplicates)"
                                 " from ingest_objects")).one() == (2, 51, 0)
    _raw_http(restarted, api_key)


def _the_sdk_way(client: Client, metric_id: str) -> None:
    """Issue 28 with Lago's own client: a plan as Lago's template makes it (the charge names
    the metric's lago_id), its charge ids round-trip, a customer renamed by POSTing the
    changed key keeps the rest, a subscription POSTed again on another plan is upgraded."""
    template = json.loads(json.dumps(DOCS["plan"]["plan"]))
    template.update(code="pro", name="Pro", amount_cents=10_000)
    template["charges"][0]["billable_metric_id"] = metric_id
    pro = client.plans.create(Plan(**template))
    assert pro is not None and pro.charges is not None
    [charge] = pro.charges.__root__
    assert (charge.lago_billable_metric_id, charge.billable_metric_code) == (
        metric_id, "mistral_tokens")
    template["charges"][0]["id"] = charge.lago_id
    again = client.plans.update(Plan(**template), "pro")
    assert again is not None and again.charges is not None
    assert again.charges.__root__[0].lago_id == charge.lago_id
    renamed = client.customers.create(Customer(external_id="acme", name="Acme Corp"))
    assert renamed is not None
    assert (renamed.name, renamed.email, renamed.currency, renamed.timezone) == (
        "Acme Corp", "billing@acme.example", "USD", "America/New_York")
    moved = client.subscriptions.create(Subscription(external_customer_id="acme",
                                                     external_id=SUB, plan_code="pro"))
    assert moved is not None and moved.plan_code == "pro"
    back = client.subscriptions.create(Subscription(external_customer_id="acme",
                                                    external_id=SUB,
                                                    plan_code="mistral_per_token"))
    assert back is not None and back.plan_code == "pro"  # a downgrade waits for the period end
    # The events that follow carry whole-second timestamps (as the SDK's int timestamp): one
    # sent within the second of the upgrade would be dated before it, on the old row, as in
    # Lago. Start them in the next second so that they all belong to the upgraded row.
    time.sleep(1.01 - time.time() % 1)


def _raw_http(server: LiveApi, key: str) -> None:
    """The same refusals over a real socket as in-process (tests/tallyflow/api/test_events)."""
    url = f"{server.url}/api/v1/events/batch"
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(timeout=30) as http:
        assert http.post(url, json={"events": []}).json() == {
            "status": 401, "error": "Unauthorized"}
        huge = http.post(url, content=b'{"events": [' + b" " * (5 * 1024 * 1024) + b"]}",
                         headers=auth)
        assert (huge.status_code, huge.json()["status"]) == (413, 413)
        assert http.post(url, content=b"{nope", headers=auth).status_code == 400
        too_many = http.post(url, headers=auth, json={"events": [
            tokens(f"m{i}", 1).dict() for i in range(101)]})
        assert too_many.json()["error_details"] == {"events": ["too_many_events"]}
        wrong = http.post(url, headers=auth, json={"events": [
            {**tokens("w", 1).dict(), "timestamp": "yesterday"}]})
        assert wrong.status_code == 422
        assert wrong.json()["error_details"] == {"0": {"timestamp": ["invalid_format"]}}
