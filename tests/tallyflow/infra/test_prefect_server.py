"""The local Prefect server: started once by the first command that runs a flow, reused by the
next ones (no start-up lag), shown by ``tallyflow status``, stopped by ``tallyflow prefect stop``.

Real commands in child processes without ``PREFECT_API_URL``, as a new user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.factories import event, jsonl
from tests.storage import free_port


def _tallyflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.pop("PREFECT_HOME", None)
    env.update({"TALLYFLOW_HOME": str(home), "TALLYFLOW_PREFECT_PORT": str(free_port())})
    return subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def _flow_runs(api_url: str) -> list[dict]:
    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback
        return json.loads(response.read())


def test_started_once_reused_shown_and_stopped(engine: Engine, tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="tfp-", dir="/tmp"))
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(5)]))
    (tmp_path / "b.jsonl").write_text(jsonl([event(i) for i in range(5, 10)]))
    try:
        before = json.loads(_tallyflow(home, "status", "--json").stdout)
        assert before["prefect_api"] is None and before["prefect_reachable"] is False
        assert "postgres" in before["database"] and "***" not in before["database"]

        first = _tallyflow(home, "ingest", str(tmp_path), "--pattern", "a.jsonl", "--json")
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Started a local Prefect server" in first.stderr
        status = json.loads(_tallyflow(home, "status", "--json").stdout)
        assert status["prefect_reachable"] is True
        ui = status["prefect_ui"]
        assert status["prefect_api"] == f"{ui}/api" and ui in first.stderr
        # The UI asks the server's own port for its data, never Prefect's default 4200 (the
        # port here is a free one: TALLYFLOW_PREFECT_PORT)
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:  # loopback
            assert json.loads(response.read())["api_url"] == status["prefect_api"]

        second = _tallyflow(home, "ingest", str(tmp_path), "--pattern", "b.jsonl", "--json")
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Started" not in second.stderr  # the same server, reused
        assert json.loads(second.stdout.strip().splitlines()[-1])["accepted"] == 5

        runs = _flow_runs(status["prefect_api"])
        assert sorted(r["name"] for r in runs) == [f"ingest {tmp_path.as_uri()}"] * 2
        assert {r["state_type"] for r in runs} == {"COMPLETED"}
        listed = json.loads(_tallyflow(home, "runs", "--json").stdout)
        assert {r["url"] for r in listed} == {f"{ui}/runs/flow-run/{r['id']}" for r in runs}
    finally:
        stopped = _tallyflow(home, "prefect", "stop")
    assert stopped.stdout.strip() == "stopped"
    after = json.loads(_tallyflow(home, "status", "--json").stdout)
    assert after["prefect_reachable"] is False


def test_clients_of_the_managed_server_load_a_one_certificate_trust_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl

    from tallyflow.infra import prefect_server

    text = prefect_server.NO_TLS_CA.read_text()
    assert text.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in text
    assert len(ssl.create_default_context(cafile=str(prefect_server.NO_TLS_CA))
               .get_ca_certs()) == 1
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_API_SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(prefect_server, "configured_api_url", lambda: None)
    monkeypatch.setattr(prefect_server, "start", lambda announce=None: {
        "api_url": "http://127.0.0.1:9/api", "ui_url": "http://127.0.0.1:9"})
    assert prefect_server.use_api() == "http://127.0.0.1:9/api"
    assert os.environ["PREFECT_API_SSL_CERT_FILE"] == str(prefect_server.NO_TLS_CA)
    monkeypatch.setenv("PREFECT_API_SSL_CERT_FILE", "/etc/my-ca.pem")
    prefect_server.use_api()
    assert os.environ["PREFECT_API_SSL_CERT_FILE"] == "/etc/my-ca.pem"  # the user's wins


def test_a_configured_api_keeps_prefect_s_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from tallyflow.infra import prefect_server

    monkeypatch.delenv("PREFECT_API_SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/a/workspaces/w")
    assert prefect_server.use_api().startswith("https://api.prefect.cloud")
    assert "PREFECT_API_SSL_CERT_FILE" not in os.environ
