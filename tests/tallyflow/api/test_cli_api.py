"""`tallyflow api-keys create|list|revoke` and the API's refusal of a bucket the interval
ingest already reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.api.keys import hash_key, key_name
from tallyflow.api.server import check_sources
from tallyflow.api.settings import ApiSettings
from tallyflow.cli.main import app
from tallyflow.errors import UserError

runner = CliRunner()


def test_keys_are_shown_once_stored_hashed_listed_and_revoked(engine: Engine) -> None:
    created = runner.invoke(app, ["api-keys", "create", "billing-sdk"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("tf_") and key_name(engine, key) is not None
    with engine.connect() as conn:
        stored = conn.execute(text("select key_hash, prefix from api_keys")).one()
    assert stored.key_hash == hash_key(key) and key not in stored
    twice = runner.invoke(app, ["api-keys", "create", "billing-sdk"])
    assert twice.exit_code == 1 and "exists already" in twice.stderr

    listed = json.loads(runner.invoke(app, ["api-keys", "list", "--json"]).stdout)
    assert [(k["name"], k["prefix"], k["revoked_at"]) for k in listed] == [
        ("billing-sdk", key[:10], None)]
    assert key not in runner.invoke(app, ["api-keys", "list"]).stdout

    revoked = runner.invoke(app, ["api-keys", "revoke", "billing-sdk"])
    assert revoked.exit_code == 0 and key_name(engine, key) is None
    again = runner.invoke(app, ["api-keys", "revoke", "billing-sdk"])
    assert again.exit_code == 1 and "no active API key" in again.stderr


@pytest.mark.parametrize("interval_source, refused", [
    ("file:///data/bucket", True), ("file:///data/bucket/api", True),
    ("file:///data/other", False), ("file:///data/bucket-2", False), ("", False),
])
def test_the_api_refuses_a_bucket_the_interval_ingest_reads(
    monkeypatch: pytest.MonkeyPatch, interval_source: str, refused: bool
) -> None:
    monkeypatch.setenv("TALLYFLOW_SOURCE_URL", interval_source)
    settings = ApiSettings("file:///data/bucket", 0.2, 5000, 1024)
    if refused:
        with pytest.raises(UserError, match="loaded twice"):
            check_sources(settings)
    else:
        check_sources(settings)


@pytest.mark.parametrize("bucket", ["s3://usage-api", "s3://usage-api/", None])
def test_the_api_deployment_reads_the_apis_own_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bucket: str | None
) -> None:
    """Same source key, same ledger rows: the safety net never loads an object twice."""
    from tallyflow.api.pipeline import api_source
    from tallyflow.api.settings import api_settings
    from tallyflow.deployments.serve import deployment_specs
    from tallyflow.tasks.ingest import SourceSpec, build_source

    monkeypatch.setenv("TALLYFLOW_HOME", str(tmp_path))
    if bucket is None:
        monkeypatch.delenv("TALLYFLOW_API_BUCKET", raising=False)
    else:
        monkeypatch.setenv("TALLYFLOW_API_BUCKET", bucket)
    spec = {s["name"]: s for s in deployment_specs()}["api"]["parameters"]["source"]
    deployed = build_source(SourceSpec.model_validate(spec))
    assert deployed.key == api_source(api_settings().source_url).key
    assert deployed.key.endswith("/api") and "//api" not in deployed.key


def test_a_taken_port_is_one_line_and_a_hint() -> None:
    import socket

    from tallyflow.api.server import check_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}") as refused:
            check_port("127.0.0.1", port)
    assert refused.value.hint and "--port" in refused.value.hint
