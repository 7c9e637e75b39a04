"""The managed local Prefect server's UI works on a port that is not Prefect's default 4200.

Issue 32: started elsewhere (4200 taken, or ``TALLYFLOW_PREFECT_PORT`` set), the server's UI
still called ``http://127.0.0.1:4200/api``: "Can't connect to Server API", or, with another
server on 4200, that server's runs. Here a real headless browser (Debian's chromium, driven by
Playwright; nothing is downloaded) opens the address ``tallyflow status`` prints and must find
the run this test made, by its name, in the UI's runs list: the UI got its data from its own
server. A screenshot is kept beside the test's files for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.factories import event, jsonl
from tests.storage import free_port

pytestmark = pytest.mark.live

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
# Chromium as a test runs it: no sandbox (root in CI), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEFAULT_PORT = 4200


def _tallyflow(home: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.pop("PREFECT_HOME", None)
    env.update({"TALLYFLOW_HOME": str(home), "TALLYFLOW_PREFECT_PORT": str(port)})
    return subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_the_managed_server_ui_shows_its_runs_on_a_non_default_port(
    engine: Engine, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright  # the dev extra

    assert CHROMIUM.exists(), "chromium is missing: apt-get install -y chromium (see .ci/run)"
    port = free_port()
    assert port != DEFAULT_PORT
    home = Path(tempfile.mkdtemp(prefix="tfui-", dir="/tmp"))  # short: sockets live there
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(3)]))
    run_name = f"ingest {tmp_path.as_uri()}"
    try:
        made = _tallyflow(home, port, "ingest", str(tmp_path), "--json")
        assert made.returncode == 0, made.stderr[-3000:]
        status = json.loads(_tallyflow(home, port, "status", "--json").stdout)
        ui = status["prefect_ui"]
        assert ui == f"http://127.0.0.1:{port}" and status["prefect_reachable"] is True

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                called: list[str] = []  # every API the UI asked for data
                page.on("request", lambda r: called.append(r.url) if "/api/" in r.url else None)
                page.goto(f"{ui}/runs", wait_until="domcontentloaded")
                # a single-page app: the list arrives after the page, from the API it was given
                page.get_by_text(run_name).first.wait_for(state="visible", timeout=60_000)
                page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
                assert page.get_by_text("Can't connect to Server API").count() == 0
            finally:
                browser.close()
        assert called and all(url.startswith(f"{ui}/api/") for url in called), sorted(
            {u for u in called if not u.startswith(f"{ui}/api/")})
    finally:
        _tallyflow(home, port, "prefect", "stop")
        shutil.rmtree(home, ignore_errors=True)
