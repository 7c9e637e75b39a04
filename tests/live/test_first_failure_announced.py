"""The first failure of a freshly scheduled deployment is announced within a minute.

Prefect's scheduler inserts scheduled runs without an event for their Scheduled state, and a
state event "follows" the one before it when the two are under five minutes apart: so the
first run of a new (or re-applied) schedule, starting within five minutes of its creation,
emits a Pending event that follows an event nobody ever sees. Prefect's triggers service holds
such an event, and every later event of that run (Running, Failed) behind it, for its lookback
(15 minutes by default): the first failure was announced 15 minutes late. The server Tallyflow
starts shortens that lookback (tallyflow/infra/event_ordering.py); this is its proof.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.objects import StateType

from tests.live.conftest import BIN, PROJECT, LiveServer, Webhook, run, wait_for

pytestmark = pytest.mark.live
PREFECT_YAML = PROJECT / "deployments" / "prefect.yaml"


def test_a_new_schedule_s_first_failure_is_announced_within_a_minute(
    live_server: LiveServer, tmp_path: Path, processes: Callable[..., Any], webhook: Webhook,
) -> None:
    env = live_server.env(TALLYFLOW_PROJECT_DIR=str(PROJECT),
                          TALLYFLOW_NOTIFY_WEBHOOK_URL=webhook.url,
                          TALLYFLOW_BILLING_RETRY_DELAY_SECONDS="1")
    env.pop("TALLYFLOW_DATABASE_URL", None)  # the run fails fast: no database configured
    prefect = str(BIN / "prefect")
    run([str(BIN / "tallyflow"), "automations", "apply"], env)
    run([prefect, "work-pool", "create", "first-failure", "--type", "process"], env)
    processes("worker-first", [prefect, "worker", "start", "--pool", "first-failure"], env)
    # The real hourly deployment with a schedule whose first run is due 20 seconds from now:
    # the scheduler creates it (no event for its Scheduled state) and the worker starts it.
    document = yaml.safe_load(PREFECT_YAML.read_text())
    hourly = next(d for d in document["deployments"] if d["name"] == "hourly")
    anchor = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    trial = {**hourly, "name": "first-failure-trial",
             "work_pool": {**hourly["work_pool"], "name": "first-failure"},
             "schedules": [{"interval": 3600, "anchor_date": anchor.isoformat()}]}
    document["deployments"] = [trial]
    document.pop("definitions", None)
    path = tmp_path / "first-failure.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(path)], env)

    def failed() -> Any:
        with live_server.client() as client:
            runs = client.read_flow_runs()
        return [r for r in runs if r.deployment_id and r.state_type == StateType.FAILED
                and r.expected_start_time.replace(microsecond=0) == anchor]

    flow_run = wait_for(failed, 180, "the scheduled run never failed")[0]
    failed_at = time.monotonic()
    wait_for(lambda: any(flow_run.name in s for s in webhook.subjects()), 75,
             lambda: f"the first failure was not announced within a minute: {webhook.received}")
    took = time.monotonic() - failed_at
    print(f"\nfirst failure of a new schedule announced {took:.0f} s after it failed")
    assert flow_run.auto_scheduled

    # The same deployment failing again within the hour pages nobody a second time.
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        again = run_deployment("billing-cycle/first-failure-trial",
                               parameters={"hour": "2026-11-27T10:00:00Z"}, timeout=0)

    def again_failed() -> bool:
        with live_server.client() as client:
            return client.read_flow_run(again.id).state_type == StateType.FAILED

    wait_for(again_failed, 120, "the second run never failed")
    time.sleep(took + 10)  # as long as the first announcement took, and more
    assert not [s for s in webhook.subjects() if again.name in s], webhook.received
    assert len(webhook.received) == 1, webhook.received
