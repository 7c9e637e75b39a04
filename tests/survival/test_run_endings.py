"""Every run ends in a true state: crashed after kill -9, cancelled after SIGTERM (within
seconds, whatever it waits on), failed with its error, completed with its figures.

The killed and terminated runs are real ``tallyflow ingest`` commands in child processes (their
own session, so a leftover child process would be seen), talking to the session's Prefect
server and the test database; the S3 case reads through a proxy in front of moto that stalls
object downloads, the local case reads a FIFO nobody writes to, the database case waits on a
table lock.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()
HEARTBEAT = {"TALLYFLOW_HEARTBEAT_SECONDS": "0.5", "TALLYFLOW_STALE_SECONDS": "2"}


def _cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, **HEARTBEAT, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tallyflow.cli", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _history(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "select kind, status, error, parent_flow_run_id, flow_run_id from run_history"
            " order by started_at"
        )).mappings()]


def _running(engine: Engine) -> bool:
    return any(r["status"] == "running" for r in _history(engine))


def _session_processes(sid: int) -> list[str]:
    found = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(sid)], capture_output=True,
                           text=True, check=False)
    return [line for line in found.stdout.splitlines() if line.strip()]


def _objects(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(Path(p).name, s) for p, s in conn.execute(
            text("select path, status from ingest_objects order by path"))]


def _events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select count(*) from events")).scalar_one())


# ------------------------------------------------------------------------------------------
# kill -9
# ------------------------------------------------------------------------------------------


def test_kill_9_is_recorded_crashed_by_the_next_command_and_leaves_no_process(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(50)]))
    child = _cli("ingest", str(tmp_path), "--json",
                 extra_env={"TALLYFLOW_FAILPOINTS": "ingest.after_claim=1:pause"})
    _wait_for(lambda: _running(engine), what="the run to start")
    # listed (committed) and then claimed by the paused load: killed mid-object
    _wait_for(lambda: _objects(engine) == [("a.jsonl", "pending")], what="the object listed")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    _wait_for(lambda: not _session_processes(child.pid), timeout=5,
              what="no process left from the killed command")
    time.sleep(2.5)  # past TALLYFLOW_STALE_SECONDS without a heartbeat
    env = {**os.environ, **HEARTBEAT}
    result = runner.invoke(app, ["runs", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)
    assert run["status"] == "crashed"
    assert "stopped reporting" in run["error"] and "killed" in run["error"]
    with engine.connect() as conn:
        assert conn.execute(text("select status from ingest_runs")).scalar_one() == "crashed"
    assert _objects(engine) == [("a.jsonl", "pending")] and _events(engine) == 0


def test_a_live_run_is_not_reaped(engine: Engine) -> None:
    from tallyflow.tasks.runs.history import finish, reap_stale, start

    start(engine, "live-run", "ingest", "ingest x", None)
    assert reap_stale(engine, stale=60) == []
    with engine.begin() as conn:
        conn.execute(text("update run_history set heartbeat_at = now() - interval '2 minutes'"))
    assert reap_stale(engine, stale=60) == ["live-run"]
    assert not finish(engine, "live-run", "completed")  # the first ending stays


# ------------------------------------------------------------------------------------------
# SIGTERM
# ------------------------------------------------------------------------------------------


def _terminate_and_check(
    engine: Engine, child: subprocess.Popen, signal_it: bool = True
) -> float:
    started = time.monotonic()
    if signal_it:
        os.kill(child.pid, signal.SIGTERM)
    child.wait(30)
    seconds = time.monotonic() - started
    stderr = child.stderr.read() if child.stderr else ""
    assert child.returncode == 143, (child.returncode, stderr[-3000:])
    assert "cancelled: stopped by SIGTERM" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not _session_processes(child.pid)
    (run,) = [r for r in _history(engine) if r["kind"] == "ingest"]
    assert run["status"] == "cancelled", run
    with engine.connect() as conn:
        assert conn.execute(text("select status from ingest_runs")).scalar_one() == "cancelled"
    return seconds


def test_sigterm_stops_a_local_read_within_seconds(engine: Engine, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "stuck.jsonl")  # opening it for reading waits for a writer forever
    child = _cli("ingest", str(tmp_path), "--json")
    _wait_for(lambda: _running(engine), what="the run to start")
    _wait_for(lambda: _objects(engine) == [("stuck.jsonl", "pending")], what="the listing")
    time.sleep(1.0)
    assert _terminate_and_check(engine, child) < 6
    assert _objects(engine) == [("stuck.jsonl", "pending")]


def test_a_cancel_from_the_ui_stops_a_cli_run(engine: Engine, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    os.mkfifo(tmp_path / "stuck.jsonl")
    child = _cli("ingest", str(tmp_path), "--json")
    _wait_for(lambda: _objects(engine) == [("stuck.jsonl", "pending")], what="the listing")
    (run,) = _history(engine)
    with get_client(sync_client=True) as client:  # what the UI's Cancel button does
        client.set_flow_run_state(run["flow_run_id"], Cancelling(), force=True)
    assert _terminate_and_check(engine, child, signal_it=False) < 8
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run["flow_run_id"]).state.is_cancelled()


def test_sigterm_stops_a_run_waiting_on_the_database(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(10)]))
    with engine.connect() as blocker:
        blocker.execute(text("lock table ingest_runs in access exclusive mode"))
        child = _cli("ingest", str(tmp_path), "--json")
        _wait_for(lambda: _running(engine), what="the run to start")
        time.sleep(1.0)  # now inserting its ingest_runs row, behind our lock
        os.kill(child.pid, signal.SIGTERM)
        child.wait(30)
        blocker.rollback()
    stderr = child.stderr.read() if child.stderr else ""
    assert child.returncode == 143, stderr[-3000:]
    (run,) = _history(engine)
    assert run["status"] == "cancelled"
    assert _events(engine) == 0


class _StallingProxy(ThreadingHTTPServer):
    """HTTP proxy to moto that answers listings and holds every object download open."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.download_started = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _StallingProxy

    def log_message(self, *args: object) -> None:
        return

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        key = parts.path.strip("/").split("/", 1)
        if self.command == "GET" and len(key) == 2 and not parts.query.startswith("list"):
            self.server.download_started.set()
            self.server.release.wait(120)  # the storage never answers
            return
        upstream = http.client.HTTPConnection(self.server.upstream.hostname,
                                              self.server.upstream.port, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward


@pytest.fixture()
def stalling_proxy(s3_endpoint: str) -> Iterator[_StallingProxy]:
    proxy = _StallingProxy(s3_endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.release.set()
        proxy.shutdown()


def test_sigterm_stops_an_s3_read_within_seconds(
    engine: Engine, s3_endpoint: str, stalling_proxy: _StallingProxy
) -> None:
    bucket = f"tf-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="events/a.jsonl",
                  Body=jsonl([event(i) for i in range(100)]).encode())
    child = _cli("ingest", f"s3://{bucket}/events", "--endpoint-url", stalling_proxy.url,
                 "--json")
    assert stalling_proxy.download_started.wait(60), "the object read never started"
    time.sleep(0.5)
    assert _terminate_and_check(engine, child) < 6
    assert _objects(engine) == [("a.jsonl", "pending")] and _events(engine) == 0


# ------------------------------------------------------------------------------------------
# Failed and completed runs, billing parents
# ------------------------------------------------------------------------------------------


def test_runs_that_fail_their_parameter_checks_are_recorded(engine: Engine) -> None:
    from tallyflow.flows.ingest import ingest_events

    state = ingest_events(source={"url": "file:///x", "format": "xml"},
                          return_state=True)
    assert state.is_failed()
    (run,) = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert (run["kind"], run["status"]) == ("ingest", "failed")
    assert "invalid parameters" in run["error"] and "source.format" in run["error"]


def test_billing_parents_and_children_are_listed(engine: Engine) -> None:
    from datetime import UTC, datetime

    from tallyflow.flows.billing import billing_cycle

    billing_cycle(hour=datetime(2026, 11, 27, 10, tzinfo=UTC))
    rows = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"billing", "usage snapshot", "wallets", "period close"}
    assert all(r["status"] == "completed" for r in rows)
    parent = by_kind["billing"]["flow_run_id"]
    assert by_kind["billing"]["parent_flow_run_id"] is None
    assert by_kind["usage snapshot"]["parent_flow_run_id"] == parent
    assert by_kind["wallets"]["parent_flow_run_id"] == parent
    assert by_kind["period close"]["parent_flow_run_id"] == parent
    assert by_kind["billing"]["figures"]["hour"].startswith("2026-11-27T10:00")
