"""The ``tallyflow`` script ends with ``os._exit`` after what a normal exit does (issue 11:
tearing down Prefect's modules cost ~0.5 s of a small ingest). What must survive: the flow
run's logs reach the Prefect API (Prefect drains them in threading's exit callbacks), the
history row, and the exit codes and messages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PREFECT_LOGGING_LEVEL": "INFO"}
    return subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _logs(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [log.message for log in logs]

    return asyncio.run(read())


def _task_runs(flow_run_id: str) -> list[str]:
    """The flow run's task runs as the API knows them (Prefect 3 reports task runs through
    its events worker, which the exit must drain)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return sorted(str(r.state_name) for r in runs)

    return asyncio.run(read())


def test_a_cli_run_s_logs_history_and_output_survive_the_quick_exit(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl([event(1), event(2)]))
    with engine.connect() as conn:
        started = conn.execute(text("select clock_timestamp()")).scalar_one()
    done = _run("ingest", str(tmp_path), "--json")
    # no connection the finished command opened is left on the server (this process
    # waited on the command, so connections opened meanwhile are the command's)
    with engine.connect() as conn:
        assert conn.execute(text(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and backend_start > :started and pid <> pg_backend_pid()"),
            {"started": started}).scalar() == 0
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["accepted"], summary["status"]) == (2, "completed")
    with engine.connect() as conn:
        flow_run_id, status = conn.execute(text(
            "select flow_run_id, status from run_history where kind = 'ingest'")).one()
    assert status == "completed"
    # the logs were shipped before the process ended (the API stores them asynchronously)
    deadline = time.monotonic() + 20
    while not _logs(flow_run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _logs(flow_run_id), "the flow run's logs never reached the Prefect API"
    while len(_task_runs(flow_run_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set(_task_runs(flow_run_id)) == {"Completed"}  # run start, the object, run finish
    assert len(_task_runs(flow_run_id)) >= 3


def test_exit_codes_and_messages_are_kept(engine: Engine, tmp_path: Path) -> None:
    missing = _run("ingest", str(tmp_path / "typo"))
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: no such file or folder")
    usage = _run("ingest", str(tmp_path), "--format", "xml")
    assert usage.returncode == 2 and "unknown --format 'xml'" in usage.stderr
    shown = _run("--help")
    assert shown.returncode == 0 and "Usage:" in shown.stdout
