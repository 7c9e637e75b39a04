"""``tallyflow serve`` the real deployments, trigger a rerun of one billing hour through the
Prefect API the way the UI's "Run" form does, and see it complete with the right money, with its
logs in the UI; a zone-less hour is refused at submit."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tests.factories import jsonl
from tests.storage import free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")
PROJECT = Path(__file__).parents[2]


def _wait_for_deployment(name: str, timeout: float = 90) -> None:
    from prefect.client.orchestration import get_client

    async def exists() -> bool:
        async with get_client() as client:
            try:
                await client.read_deployment_by_name(name)
                return True
            except Exception:
                return False

    deadline = time.monotonic() + timeout
    while not asyncio.run(exists()):
        assert time.monotonic() < deadline, f"deployment {name} never appeared"
        time.sleep(0.5)


def _queue_a_scheduled_run(deployment: str, when: datetime) -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    async def queue() -> UUID:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(
                found.id, state=Scheduled(scheduled_time=when))
            assert not run.name.startswith("billing")  # Prefect's random name
            return run.id

    return asyncio.run(queue())


def _run_name(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).name

    return asyncio.run(read())


def _log_levels(flow_run_id: object) -> set[int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def levels() -> set[int]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        return {log.level for log in logs}

    found: set[int] = set()
    deadline = time.monotonic() + 30  # logs are shipped in batches
    while logging.INFO not in found and time.monotonic() < deadline:
        found = asyncio.run(levels())
        time.sleep(0.5)
    return found


def _heartbeats(flow_run_id: object) -> int:
    """The ``prefect.flow-run.heartbeat`` events the server recorded for this run (the engine
    sends one as the run starts, then every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds)."""
    from prefect.client.orchestration import get_client

    query = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                        "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
             "limit": 50}

    async def count() -> int:
        async with get_client() as client:
            response = await client._client.post("/events/filter", json=query)
            response.raise_for_status()
            return len(response.json()["events"])

    found = 0
    deadline = time.monotonic() + 30  # events are written by the server in batches
    while not found and time.monotonic() < deadline:
        found = asyncio.run(count())
        time.sleep(0.5)
    return found


def test_ui_style_rerun_of_a_billing_hour_on_served_deployments(
    engine: Engine, tmp_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    assert apply_catalog(engine, [PROJECT / "examples" / "mistral"]).ok
    (tmp_path / "usage.jsonl").write_text(jsonl([
        {"transaction_id": "t1", "external_subscription_id": "sub_acme_001",
         "code": "mistral_tokens", "timestamp": "2025-11-24T15:00:00Z",
         "properties": {"tokens": 2_000_000, "model": "mistral-small", "type": "input"}},
        {"transaction_id": "t2", "external_subscription_id": "sub_acme_001",
         "code": "mistral_tokens", "timestamp": "2025-11-24T15:30:00Z",
         "properties": {"tokens": 1, "model": "mistral-large", "type": "output"}},
    ]))
    source = build_source(SourceSpec(url=tmp_path.as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "TALLYFLOW_WALLETS_SETTLE_PAID": "1"}
    # The CLI keeps Prefect at WARNING for its own commands; served runs must still log INFO.
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    env.pop("TALLYFLOW_NOTIFY_WEBHOOK_URL", None)
    metrics_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tallyflow.cli", "serve", "--only", "hourly", "--only", "backfill",
         "--metrics-port", str(metrics_port)],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for_deployment("billing-cycle/hourly")
        queued = _queue_a_scheduled_run("billing-cycle/hourly", datetime(2099, 1, 1, 5, 7,
                                                                         tzinfo=UTC))
        run = run_deployment(
            "billing-cycle/hourly",
            parameters={"hour": "2025-11-24T17:00:00Z"},
            timeout=240,
        )
        assert run.state is not None and run.state.is_completed(), run.state
        assert run.name == "billing 2025-11-24T17:00Z"
        # the run queued with a random name, as the scheduler queues them, is named by its
        # hour before it starts (tasks/runs/names.py)
        assert _run_name(queued) == "billing 2099-01-01T05:00Z"
        levels = _log_levels(run.id)
        assert logging.INFO in levels, levels
        # served runs send Prefect's heartbeats, so the zombie-run automation can tell a dead
        # process from a long run (tallyflow/deployments/serve.py; issue 32, item 2)
        assert _heartbeats(run.id) >= 1
        # serve's Prometheus endpoint: the hour just billed is the last good one
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        values = {s.name: s.value for f in text_string_to_metric_families(
            scraped.read().decode()) for s in f.samples}
        assert values["tallyflow_up"] == 1
        assert (values["tallyflow_last_good_billing_hour_timestamp_seconds"]
                == datetime(2025, 11, 24, 17, tzinfo=UTC).timestamp())
        with pytest.raises(Exception, match="hour"):
            run_deployment("billing-cycle/hourly", parameters={"hour": "2025-11-24T17:00:00"},
                           timeout=0)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    with engine.connect() as conn:
        snapshot = conn.execute(text(
            "select amount_cents, as_of from usage_snapshots"
            " where external_subscription_id = 'sub_acme_001'"
        )).one()
        deducted = conn.execute(text(
            "select coalesce(sum(amount_cents), 0) from wallet_transactions"
            " where source = 'usage' and direction = 'outbound'"
        )).scalar_one()
    # 2M small input tokens at $1 per 1M = $2.00; 1 large output token rounds up to a whole
    # package of 1M at $12: 200 + 1200 cents.
    assert int(snapshot.amount_cents) == 1400, output[-3000:]
    assert snapshot.as_of.isoformat() == "2025-11-24T17:00:00+00:00"
    assert int(deducted) == 1400


def test_serve_has_its_runs_beat_every_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's own default is one heartbeat every 180 s, longer than the 90 s the
    tallyflow-zombie-runs automation waits: a served run left at the default would be marked
    Crashed while alive. ``serve`` hands its runs 30 s unless the operator chose a frequency."""
    import prefect

    from tallyflow.deployments import serve as serving

    handed: list[str | None] = []
    monkeypatch.setattr(serving, "runner_deployments", lambda only: [])
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **options: handed.append(
        os.environ.get(serving.HEARTBEAT_ENV)))
    monkeypatch.delenv(serving.HEARTBEAT_ENV, raising=False)
    serving.serve()
    monkeypatch.setenv(serving.HEARTBEAT_ENV, "45")
    serving.serve()
    assert handed == ["30", "45"]
