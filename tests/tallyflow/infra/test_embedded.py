"""A user without any PostgreSQL: the embedded server starts, is reused, and can be stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).parents[3] / "examples" / "mistral"


def _tallyflow(home: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TALLYFLOW_DATABASE_URL"}
    env["TALLYFLOW_HOME"] = home
    return subprocess.run(
        [sys.executable, "-m", "tallyflow.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_embedded_postgres_without_any_configuration() -> None:
    home = tempfile.mkdtemp(prefix="tf-emb-", dir="/tmp")  # short: the socket path has a limit
    try:
        applied = _tallyflow(home, "apply", str(EXAMPLES), "--json")
        assert applied.returncode == 0, applied.stderr
        assert json.loads(applied.stdout)["kinds"]["plan"]["created"] == 1
        status = json.loads(_tallyflow(home, "db", "status", "--json").stdout)
        assert status["mode"] == "embedded" and status["running"] is True
        assert status["revision"] == status["head"]
        again = _tallyflow(home, "apply", str(EXAMPLES), "--json")
        assert json.loads(again.stdout)["kinds"]["plan"]["unchanged"] == 1  # same server, same data
        dump = str(Path(home) / "backup.dump")
        backed_up = _tallyflow(home, "db", "backup", dump)
        assert backed_up.returncode == 0, backed_up.stderr
        restored = _tallyflow(home, "db", "restore", dump, "--yes")
        assert restored.returncode == 0, restored.stderr
        after = _tallyflow(home, "apply", str(EXAMPLES), "--json")
        assert json.loads(after.stdout)["kinds"]["plan"]["unchanged"] == 1  # the same catalog back
    finally:
        stopped = _tallyflow(home, "db", "stop")
    assert "stopped" in stopped.stdout
    assert json.loads(_tallyflow(home, "db", "status", "--json").stdout)["running"] is False
