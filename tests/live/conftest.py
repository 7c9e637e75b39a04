"""Live trials: a real ``prefect server start`` (scheduler, triggers and actions services on),
real workers and ``tallyflow serve`` as separate processes, a webhook receiver on loopback.

These are what an operator runs; they take a minute or two, so they form their own CI step
(``make test-live``, marker ``live``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.storage import free_port

PROJECT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


class LiveServer:
    def __init__(self, api_url: str, home: str) -> None:
        self.api_url = api_url
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server (a worker, a CLI)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": self.home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        })
        env.update(extra)
        return env

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tempfile.mkdtemp(prefix="tf-prefect-live-")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = LiveServer(api, home)
    log = tmp_path_factory.mktemp("prefect-server") / "server.log"
    process = _start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        # The triggers service's ordering as the server Tallyflow starts has it
        # (tallyflow/infra/prefect_server.py, tallyflow/infra/event_ordering.py).
        server.env(PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
                   PREFECT_SERVER_LOGGING_LEVEL="WARNING",
                   PREFECT_SERVER_EVENTS_CAUSAL_ORDERING="tallyflow.infra.event_ordering",
                   PYTHONPATH=str(PROJECT)),
        log,
    )
    try:
        wait_for(lambda: _healthy(api), 90, f"the Prefect server never answered:\n{_tail(log)}")
        yield server
    finally:
        _stop(process)
        shutil.rmtree(home, ignore_errors=True)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def wait_for(check: Callable[[], Any], timeout: float, message: str | Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message() if callable(message) else message)
        time.sleep(0.5)


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start background processes (workers, serve) that are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = _start(argv, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            _stop(process)


def run(argv: list[str], env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


class Webhook:
    """An HTTP receiver on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    received.append(json.loads(body or b"{}"))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def subjects(self) -> list[str]:
        return [str(body.get("subject", "")) for body in self.received]


@pytest.fixture()
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.server.shutdown()
