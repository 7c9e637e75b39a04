"""A local Prefect server that Tallyflow starts once and reuses, like its embedded PostgreSQL.

Without ``PREFECT_API_URL`` Prefect starts a temporary server inside every process that runs a
flow: seconds before any work (docs/scaling.md §6), and a child process that outlives a killed
command. Instead, the first command that runs a flow starts ``prefect server start`` in its own
session with its state under ``TALLYFLOW_HOME/prefect`` and records where it listens; later
commands find it there at once, runs stay real Prefect flow runs with history, and everyone
gets the UI at a printed address. ``PREFECT_API_URL`` (or a Prefect profile's) always wins:
then nothing starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tallyflow.infra.settings import get_settings, tallyflow_home

NO_TLS_CA = Path(__file__).with_name("no_tls_ca.pem")
START_TIMEOUT = 120.0


class PrefectServerError(RuntimeError):
    """The local Prefect server did not come up."""


def state_dir() -> Path:
    path = tallyflow_home() / "prefect"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_file() -> Path:
    return state_dir() / "server.json"


def configured_api_url() -> str | None:
    """The API a user configured (environment or Prefect profile), if any.

    Read without importing Prefect when the environment has it (the usual case), since the
    import alone costs most of a second.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    return None


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        # Plain http, on loopback only: the local Prefect server.
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def recorded() -> dict[str, Any] | None:
    try:
        return json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None


def running() -> dict[str, Any] | None:
    """The managed server's record when it answers, else None."""
    info = recorded()
    if info and healthy(info["api_url"]):
        return info
    return None


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise PrefectServerError("no free local port for the Prefect server")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One starter at a time (two commands started together share one server)."""
    with open(state_dir() / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start(announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start the managed server if it is not running; return its record."""
    info = running()
    if info:
        return info
    with _locked():
        info = running()
        if info:
            return info
        folder = state_dir()
        port = _free_port(get_settings().prefect_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
        env.update({
            "PREFECT_HOME": str(folder),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # The UI asks this address for its data; Prefect's default is port 4200 whatever
            # port the server got, which leaves the UI dead (or showing another server's runs)
            # when 4200 was taken.
            "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
        })
        # Failures announced within seconds, the first after a deploy too (event_ordering.py).
        env.setdefault("PREFECT_SERVER_EVENTS_CAUSAL_ORDERING", "tallyflow.infra.event_ordering")
        prefect = Path(sys.executable).with_name("prefect")
        command = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
        with open(folder / "server.log", "ab") as log:
            process = subprocess.Popen(  # our own interpreter's prefect
                [*command, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,  # outlives this command, not tied to its terminal
            )
        api_url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(api_url, timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise PrefectServerError(
                    f"the local Prefect server did not start (see {folder / 'server.log'})"
                )
            time.sleep(0.2)
        info = {"pid": process.pid, "port": port, "api_url": api_url,
                "ui_url": f"http://127.0.0.1:{port}", "home": str(folder)}
        _state_file().write_text(json.dumps(info))
    if announce:
        announce(f"Started a local Prefect server (kept running for later commands); "
                 f"UI at {info['ui_url']}")
    return info


def stop() -> bool:
    """Stop the managed server; True when one was running."""
    info = recorded()
    if not info:
        return False
    alive = healthy(info["api_url"])
    try:
        os.killpg(info["pid"], signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        alive = False
    else:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _pid_alive(info["pid"]):
            time.sleep(0.1)
        if _pid_alive(info["pid"]):
            os.killpg(info["pid"], signal.SIGKILL)
    _state_file().unlink(missing_ok=True)
    return alive


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def use_api(announce: Callable[[str], None] | None = None) -> str:
    """Make this process talk to a Prefect API: the configured one, else the managed server.

    Call before Prefect is imported (its settings are read at import).
    """
    configured = configured_api_url()
    if configured:
        return configured
    info = start(announce)
    os.environ["PREFECT_API_URL"] = info["api_url"]
    os.environ.setdefault("PREFECT_UI_URL", info["ui_url"])
    # Every Prefect API client (several per run) loads its TLS trust store when it is made,
    # the usual bundle's ~150 certificates each time, even for this plain http://127.0.0.1
    # server, where TLS is never used. A one-certificate store makes that nearly free
    # (docs/scaling.md §6). It trusts nothing: its key was thrown away when it was made
    # (openssl req -x509 -keyout /dev/null), so were TLS ever used with it, verification would fail,
    # never pass. A PREFECT_API_SSL_CERT_FILE set in the environment is kept.
    os.environ.setdefault("PREFECT_API_SSL_CERT_FILE", str(NO_TLS_CA))
    return info["api_url"]


def addresses() -> dict[str, Any]:
    """Where the Prefect API and UI are, for ``tallyflow status`` (starts nothing)."""
    configured = configured_api_url()
    if configured:
        ui = os.environ.get("PREFECT_UI_URL") or configured.rstrip("/").removesuffix("/api")
        return {"mode": "configured (PREFECT_API_URL)", "api_url": configured, "ui_url": ui,
                "reachable": healthy(configured)}
    info = running()
    if info:
        return {"mode": "local server managed by tallyflow", "api_url": info["api_url"],
                "ui_url": info["ui_url"], "reachable": True, "pid": info["pid"],
                "home": info["home"]}
    return {"mode": "local server managed by tallyflow (not running; the next command that "
                    "runs a flow starts it)", "api_url": None, "ui_url": None,
            "reachable": False}
