"""The schedules fire on a fresh install: deploy as docs/operations.md says, and the server's
scheduler creates the runs, which a worker executes to Completed; a worker that has no database
configured fails fast with what to do, and someone is notified."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from tests.live.conftest import BIN, PROJECT, LiveServer, Webhook, run, wait_for

pytestmark = pytest.mark.live
PREFECT_YAML = PROJECT / "deployments" / "prefect.yaml"


def _runs(server: LiveServer, deployment: str, *states: StateType) -> list[Any]:
    with server.client() as client:
        found = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states)))
            ) if states else None,
        )
    return list(found)


def _trial_yaml(tmp_path: Path, pool: str, name: str, schedule: dict | None) -> Path:
    """The real ``hourly`` deployment, renamed, on ``pool``, with a test-only schedule."""
    document = yaml.safe_load(PREFECT_YAML.read_text())
    hourly = next(d for d in document["deployments"] if d["name"] == "hourly")
    trial = {**hourly, "name": name, "work_pool": {"name": pool, "work_queue_name": "default"},
             "schedules": [schedule] if schedule else []}
    document["deployments"] = [trial]
    document.pop("definitions", None)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_scheduled_runs_are_created_and_one_completes_on_a_worker(
    live_server: LiveServer, database_url: str, tmp_path: Path,
    processes: Callable[..., Any],
) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    env = live_server.env(TALLYFLOW_DATABASE_URL=database_url,
                          TALLYFLOW_PROJECT_DIR=str(PROJECT),
                          TALLYFLOW_SOURCE_URL=bucket.as_uri())
    prefect = str(BIN / "prefect")
    # The deploy steps of docs/operations.md, verbatim apart from the trial deployment.
    run([str(BIN / "tallyflow"), "db", "upgrade"], env)
    run([prefect, "work-pool", "create", "tallyflow", "--type", "process"], env)
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)], env)
    trial = _trial_yaml(tmp_path, "tallyflow", "scheduler-trial", {"interval": 10})
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(trial)], env)

    # The real schedules: the scheduler creates upcoming runs for the hourly cron and the
    # five-minute ingest, at the times the schedules say.
    hourly = wait_for(lambda: _runs(live_server, "hourly", StateType.SCHEDULED), 60,
                      "the scheduler created no run for billing-cycle/hourly")
    for flow_run in hourly:
        start = flow_run.expected_start_time.astimezone(UTC)
        assert (start.minute, start.second) == (0, 0), start
        assert start > datetime.now(UTC)
    assert wait_for(lambda: _runs(live_server, "interval", StateType.SCHEDULED), 60,
                    "the scheduler created no run for ingest-events/interval")

    processes("worker", [prefect, "worker", "start", "--pool", "tallyflow", "--limit", "2"], env)
    completed = wait_for(
        lambda: _runs(live_server, "scheduler-trial", StateType.COMPLETED), 180,
        lambda: f"no scheduled trial run completed: "
                f"{[(r.name, r.state_name) for r in _runs(live_server, 'scheduler-trial')]}",
    )
    flow_run = completed[0]
    assert flow_run.auto_scheduled  # created by the scheduler, not by this test
    assert flow_run.name.startswith("billing ") and flow_run.name.endswith(":00Z")


def test_a_worker_without_a_database_fails_fast_and_someone_is_told(
    live_server: LiveServer, database_url: str, tmp_path: Path,
    processes: Callable[..., Any], webhook: Webhook,
) -> None:
    from prefect.deployments import run_deployment

    env = live_server.env(TALLYFLOW_PROJECT_DIR=str(PROJECT),
                          TALLYFLOW_NOTIFY_WEBHOOK_URL=webhook.url,
                          TALLYFLOW_BILLING_RETRY_DELAY_SECONDS="2")
    env.pop("TALLYFLOW_DATABASE_URL", None)
    prefect = str(BIN / "prefect")
    applied = run([str(BIN / "tallyflow"), "automations", "apply"], env)
    assert "tallyflow-run-failed" in applied and "tallyflow-wallet-alert" in applied
    run([prefect, "work-pool", "create", "no-database", "--type", "process"], env)
    trial = _trial_yaml(tmp_path, "no-database", "no-database-trial", None)
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(trial)], env)
    processes("worker-no-db", [prefect, "worker", "start", "--pool", "no-database"], env)

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        flow_run = run_deployment("billing-cycle/no-database-trial",
                                  parameters={"hour": "2026-11-27T10:00:00Z"}, timeout=0)
    # The billing cycle retries as a whole (2 retries, for transient trouble); a missing
    # database is not transient and costs only its retry delays (shortened here) before the run
    # is Failed, with the reason.
    failed = wait_for(
        lambda: [r for r in _runs(live_server, "no-database-trial", StateType.FAILED)
                 if r.id == flow_run.id],
        240, "the run on the worker without a database never failed")
    message = failed[0].state.message or ""
    assert "TALLYFLOW_DATABASE_URL" in message, message
    wait_for(lambda: any("no-database" in s or "Failed" in s for s in webhook.subjects()), 60,
             lambda: f"no notification reached the webhook: {webhook.received}")
    subject = next(s for s in webhook.subjects() if "Failed" in s)
    assert "billing-cycle" in subject and "billing 2026-11-27T10:00Z" in subject


def test_wallet_alert_events_notify_and_reapplying_replaces_the_automations(
    live_server: LiveServer, webhook: Webhook,
) -> None:
    from datetime import datetime
    from decimal import Decimal

    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tallyflow.models.wallets import ALERT_BELOW
    from tallyflow.tasks.wallets import alert_event

    env = live_server.env(TALLYFLOW_NOTIFY_WEBHOOK_URL=webhook.url)
    for _ in range(2):
        run([str(BIN / "tallyflow"), "automations", "apply"], env)
    with live_server.client() as client:
        for name in ("tallyflow-run-failed", "tallyflow-wallet-alert",
                     "tallyflow-watermark-held"):
            assert len(client.read_automations_by_name(name)) == 1, name

    alert = {"kind": ALERT_BELOW, "wallet_id": 7, "wallet_code": "prepaid",
             "external_customer_id": "acme", "crossing": 1, "credits_balance": Decimal("4.5"),
             "threshold_credits": Decimal("10"), "as_of": datetime(2026, 11, 27, 10, tzinfo=UTC),
             "currency": "USD", "rate_amount": Decimal("1")}
    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        emit_event(**alert_event(alert))
        EventsWorker.drain_all()
    low = "Tallyflow: wallet prepaid of acme is low"
    wait_for(lambda: low in webhook.subjects(), 60,
             lambda: f"the wallet alert reached no webhook: {webhook.received}")
    body = next(b for b in webhook.received if b.get("subject") == low)
    assert body["source"] == "tallyflow"
    assert ("Balance: 4.50 USD (4.50000 credits); threshold 10.00 USD (10.00000 credits)."
            in body["body"])


def test_a_dead_claim_holding_the_watermark_notifies(
    live_server: LiveServer, webhook: Webhook,
) -> None:
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tallyflow.tasks.ingest.claims import WatermarkHolder, held_event

    run([str(BIN / "tallyflow"), "automations", "apply"],
        live_server.env(TALLYFLOW_NOTIFY_WEBHOOK_URL=webhook.url))
    since = datetime(2026, 11, 27, 12, 19, tzinfo=UTC)
    holder = WatermarkHolder(
        object_id=41, object="s3://usage/late.jsonl", source="s3://usage/late.jsonl",
        status="pending", since=since, claimed_at=since, ingest_run=9, flow_run_id="f-9",
        run_status="crashed", error=None, dead=True, holds=True, watermark=since)
    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        emit_event(**held_event(holder, "ingested"))
        EventsWorker.drain_all()
    wait_for(lambda: any("watermark was held" in s for s in webhook.subjects()), 60,
             lambda: f"the watermark event reached no webhook: {webhook.received}")
    body = next(b for b in webhook.received if "watermark was held" in str(b.get("subject")))
    assert "s3://usage/late.jsonl" in body["subject"]
    assert "run 9 (flow run f-9)" in body["body"]
    assert "crashed" in body["body"] and "reclaimed it: ingested" in body["body"]
