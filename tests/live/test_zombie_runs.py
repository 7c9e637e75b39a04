"""A worker killed with kill -9 mid-run (its whole process group: the machine is gone): the
run's heartbeats stop, the tallyflow-zombie-runs automation has Prefect mark it Crashed within
two minutes, that releases the deployment's concurrency slot so the next hourly run is not
delayed, and tallyflow-run-failed announces the crash once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.objects import StateType

from tests.live.conftest import BIN, PROJECT, LiveServer, Webhook, run, wait_for

# Minutes long by design (the automation waits 90 s for a heartbeat that never comes): a
# release trial with the soak suite (`make test-soak`), outside CI's 25-minute budget.
pytestmark = [pytest.mark.live, pytest.mark.soak]
PREFECT_YAML = PROJECT / "deployments" / "prefect.yaml"


def _hourly_on(tmp_path: Path, pool: str, name: str) -> Path:
    """The real ``hourly`` deployment (its concurrency limit and heartbeat environment
    included), renamed, on ``pool``, without a schedule."""
    document = yaml.safe_load(PREFECT_YAML.read_text())
    hourly = next(d for d in document["deployments"] if d["name"] == "hourly")
    assert hourly["concurrency_limit"]["limit"] == 1
    trial = {**hourly, "name": name, "work_pool": {**hourly["work_pool"], "name": pool},
             "schedules": []}
    assert trial["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    document["deployments"] = [trial]
    document.pop("definitions", None)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _state(server: LiveServer, flow_run_id: Any) -> Any:
    with server.client() as client:
        return client.read_flow_run(flow_run_id)


def test_a_killed_worker_s_run_is_crashed_its_slot_freed_and_announced_once(
    live_server: LiveServer, database_url: str, engine: Any, tmp_path: Path,
    processes: Callable[..., Any], webhook: Webhook,
) -> None:
    from prefect.deployments import run_deployment

    from tests.tasks.wallets.test_wallets_support import WalletSpec, seed

    seed(engine, {"a": [WalletSpec("main", granted="10")]})  # a subscription to rate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    env = live_server.env(TALLYFLOW_DATABASE_URL=database_url,
                          TALLYFLOW_PROJECT_DIR=str(PROJECT),
                          TALLYFLOW_SOURCE_URL=bucket.as_uri(),
                          TALLYFLOW_NOTIFY_WEBHOOK_URL=webhook.url)
    prefect = str(BIN / "prefect")
    run([str(BIN / "tallyflow"), "db", "upgrade"], env)
    applied = run([str(BIN / "tallyflow"), "automations", "apply"], env)
    assert "tallyflow-zombie-runs" in applied
    run([prefect, "work-pool", "create", "zombie", "--type", "process"], env)
    run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file",
         str(_hourly_on(tmp_path, "zombie", "zombie-trial"))], env)
    # The run holds still in the usage snapshot (a failpoint pause of up to 60 s), so the
    # worker dies mid-run.
    worker = processes("worker-doomed", [prefect, "worker", "start", "--pool", "zombie"],
                       {**env, "TALLYFLOW_FAILPOINTS": "usage.rate_subscription=1:pause"})
    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        doomed = run_deployment("billing-cycle/zombie-trial",
                                parameters={"hour": "2026-11-27T10:00:00Z"}, timeout=0)
    wait_for(lambda: _state(live_server, doomed.id).state_type == StateType.RUNNING, 90,
             lambda: f"the run never started: {_state(live_server, doomed.id).state}")
    time.sleep(8)  # its first heartbeat is sent as it starts; let it reach the server
    # The machine is gone: the worker and the run's own process (the worker may start it in
    # a session of its own; it names it in infrastructure_pid, "host:pid").
    infrastructure = str(_state(live_server, doomed.id).infrastructure_pid or "")
    os.killpg(worker.pid, signal.SIGKILL)
    if infrastructure:
        pid = int(infrastructure.rpartition(":")[2])
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = time.monotonic()

    crashed = wait_for(
        lambda: _state(live_server, doomed.id).state_type == StateType.CRASHED, 150,
        lambda: f"still {_state(live_server, doomed.id).state} after the worker died")
    took = time.monotonic() - killed
    assert crashed and took < 120, f"marked Crashed {took:.0f} s after the kill"
    print(f"\nkilled worker's run marked Crashed {took:.0f} s after kill -9")

    # The slot is free: the next hourly run starts at once on a healthy worker and completes.
    processes("worker-healthy", [prefect, "worker", "start", "--pool", "zombie"], env)
    with temporary_settings(updates={PREFECT_API_URL: live_server.api_url}):
        following = run_deployment("billing-cycle/zombie-trial",
                                   parameters={"hour": "2026-11-27T11:00:00Z"}, timeout=0)
    wait_for(lambda: _state(live_server, following.id).state_type == StateType.COMPLETED, 90,
             lambda: f"the next run did not complete: {_state(live_server, following.id).state}")
    with live_server.client() as client:
        states = client.read_flow_run_states(following.id)
    assert not [s for s in states if s.name == "AwaitingConcurrencySlot"], states

    name = _state(live_server, doomed.id).name
    about = lambda: [b for b in webhook.received if name in str(b.get("subject"))]  # noqa: E731
    wait_for(about, 60, lambda: f"the crash was not announced: {webhook.received}")
    time.sleep(10)  # a second announcement (one per automation, or a repeat) would be here
    announced = about()
    assert len(announced) == 1, announced
    assert "Crashed" in announced[0]["subject"]
    assert "No heartbeat for 90 seconds" in announced[0]["body"]
    assert "/runs/flow-run/" in announced[0]["body"]
