"""An in-process API app over the test database, with a folder bucket and an API key."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.api.app import create_app
from tallyflow.api.keys import create_key
from tallyflow.api.settings import ApiSettings
from tests.tallyflow.api.lago_spec import violations


def settings_for(folder: Path, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {"bucket": (folder / "bucket").as_uri(), "commit_seconds": 0.05,
                              "commit_events": 5000, "max_body_bytes": 4 * 1024 * 1024}
    return ApiSettings(**{**values, **overrides})


def lago_checked(response: httpx.Response) -> None:
    """Every answer of an operation Lago's pinned OpenAPI document defines must validate
    against Lago's schema for it (``lago_spec.py``), in every API test."""
    response.read()
    if not response.headers.get("content-type", "").startswith("application/json"):
        return
    request = response.request
    found = violations(request.method, request.url.path, response.status_code, response.json())
    report = os.environ.get("LAGO_SPEC_REPORT")
    if report and found:
        with open(report, "a") as handle:
            handle.writelines(line + "\n" for line in found)
        return
    assert not found, "\n".join(found)


@pytest.fixture()
def api_key(engine: Engine) -> str:
    return create_key(engine, "tests")[0]


@pytest.fixture()
def make_client(engine: Engine, tmp_path: Path,
                api_key: str) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(load: bool = True, mark: bool = False, **overrides: Any) -> TestClient:
        """``mark``: whether the API moves the ingest watermark (docs/architecture.md §23);
        off by default, so a test's watermark is the one it sets."""
        app = create_app(engine, settings_for(tmp_path, **overrides), load=load, mark=mark)
        client = TestClient(app, headers={"Authorization": f"Bearer {api_key}"})
        client.event_hooks = {"response": [lago_checked]}
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def wait_for(engine: Engine, query: str, expected: Any, timeout: float = 60.0,
             **params: Any) -> Any:
    """Poll until the query gives ``expected`` (the loader works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            value = conn.execute(text(query), params).scalar()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class LiveApi:
    """A `tallyflow api` child process on loopback, over the test database."""

    def __init__(self, url: str, process: Any, bucket: Path, log: Path) -> None:
        self.url, self.process, self.bucket, self.log = url, process, bucket, log

    def kill(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except Exception:
                self.kill()


@pytest.fixture()
def live_api(database_url: str, engine: Engine, tmp_path: Path,
             api_key: str) -> Iterator[Callable[..., LiveApi]]:
    import os
    import subprocess
    import sys

    import httpx

    from tests.storage import free_port

    started: list[LiveApi] = []

    def start(*args: str, **env: str) -> LiveApi:
        port = free_port()
        log = tmp_path / f"api-{port}.log"
        environment = {**os.environ, "TALLYFLOW_DATABASE_URL": database_url,
                       "TALLYFLOW_HOME": str(tmp_path / "home"),
                       "TALLYFLOW_API_BUCKET": (tmp_path / "bucket").as_uri(),
                       "TALLYFLOW_API_COMMIT_SECONDS": "0.05", **env}
        environment.pop("TALLYFLOW_FAILPOINTS", None) if "TALLYFLOW_FAILPOINTS" not in env \
            else None
        process = subprocess.Popen(
            [sys.executable, "-m", "tallyflow.cli", "api", "--port", str(port), *args],
            env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        server = LiveApi(f"http://127.0.0.1:{port}", process, tmp_path / "bucket", log)
        started.append(server)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/docs", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tallyflow api did not start:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for server in started:
        server.stop()


HELD = "tests:held"  # the source of the reservations hold_watermark writes (no API sweeps it)


def hold_watermark(engine: Engine, at: datetime) -> None:
    """Hold the ingest watermark at ``at`` while a live `tallyflow api` moves it (its mark):
    an object reserved then and not loaded (docs/architecture.md §23)."""
    with engine.begin() as conn:
        conn.execute(text("insert into api_writes (source, path, begun_at)"
                          " values (:s, :p, :at)"), {"s": HELD, "p": f"held:{at}", "at": at})


def release_watermark(engine: Engine) -> None:
    """Drop the holds: the watermark is the ingest runs' and the API's mark again."""
    with engine.begin() as conn:
        conn.execute(text("delete from api_writes where source = :s"), {"s": HELD})
