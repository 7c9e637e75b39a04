"""Errors a person can act on: one line, a hint, a non-zero exit; ``--debug`` for the traceback.

Each case runs the real command (the ingest flow on the session's Prefect server, moto's S3 over
HTTP, the real PostgreSQL) and asserts the message and the exit code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.factories import event, jsonl
from tests.storage import free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def _bucket(endpoint: str) -> str:
    name = f"tf-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture()
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung proxy or server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture()
def strict_s3() -> Iterator[str]:
    """A moto S3 server that checks credentials (no IAM user exists, so every key is wrong)."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _ingest(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = runner.invoke(app, ["ingest", *args, "--json"])
    return result.exit_code, result.output, time.monotonic() - started


def _assert_one_line(output: str, message: str, hint: str) -> None:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith(("error:", "hint:"))]
    assert len(lines) == 2, output
    assert lines[0].startswith("error: ") and message in lines[0], output
    assert lines[1].startswith("hint: ") and hint in lines[1], output


def test_unknown_url_scheme(engine: Engine) -> None:
    code, output, _ = _ingest("foo://x")
    assert code == 1
    _assert_one_line(output, "unknown URL scheme 'foo://' in foo://x", "use a local path")
    (run,) = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert (run["kind"], run["status"]) == ("ingest", "failed")
    assert "unknown URL scheme" in run["error"]


def test_local_path_that_does_not_exist(engine: Engine, tmp_path: Path) -> None:
    code, output, _ = _ingest(str(tmp_path / "typo"))
    assert code == 1
    _assert_one_line(output, f"no such file or folder: {tmp_path / 'typo'}", "check the path")


def test_bucket_that_does_not_exist(engine: Engine, s3_endpoint: str) -> None:
    code, output, _ = _ingest("s3://no-such-bucket-here/events", "--endpoint-url", s3_endpoint)
    assert code == 1
    _assert_one_line(output, "bucket 'no-such-bucket-here' does not exist at", "bucket name")


def test_empty_prefix_in_an_existing_bucket_is_not_an_error(
    engine: Engine, s3_endpoint: str
) -> None:
    bucket = _bucket(s3_endpoint)
    code, output, _ = _ingest(f"s3://{bucket}/nothing/yet", "--endpoint-url", s3_endpoint)
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["objects"] == 0


@pytest.mark.parametrize("endpoint_kind", ["refused", "silent"])
def test_unreachable_endpoint_fails_in_bounded_time(
    engine: Engine, silent_endpoint: str, endpoint_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some credentials, so the client gets as far as the network (nothing there checks them).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOBODYCHECKS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nobody-checks")
    endpoint = silent_endpoint if endpoint_kind == "silent" else f"http://127.0.0.1:{free_port()}"
    code, output, seconds = _ingest("s3://bucket/events", "--endpoint-url", endpoint)
    assert code == 1
    _assert_one_line(output, f"cannot reach the storage endpoint {endpoint}", "--endpoint-url")
    assert seconds < 15, seconds


def test_missing_credentials(
    engine: Engine, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = _bucket(s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()  # a cached client would still hold the old keys
    try:
        code, output, _ = _ingest(f"s3://{bucket}/events", "--endpoint-url", s3_endpoint)
    finally:
        S3FileSystem.clear_instance_cache()
    assert code == 1
    _assert_one_line(output, f"no credentials found for s3://{bucket}/events",
                     "AWS_ACCESS_KEY_ID")


def test_wrong_credentials(
    engine: Engine, strict_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNTOTHESERVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret-it-knows")
    code, output, _ = _ingest("s3://some-bucket/events", "--endpoint-url", strict_s3)
    assert code == 1
    _assert_one_line(output, "access denied to s3://some-bucket/events (InvalidAccessKeyId)",
                     "check the credentials")


@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [
        ("--format", "xml", "auto, jsonl, json, csv, parquet"),
        ("--mapping", "openai", "anthropic-batch, anthropic-messages, bedrock-converse"),
        ("--source", "kafka", "fsspec"),
    ],
)
def test_unknown_choice_is_a_usage_error(
    engine: Engine, tmp_path: Path, option: str, value: str, choices: str
) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path), option, value])
    assert result.exit_code == 2
    _assert_one_line(result.output, f"unknown {option} '{value}'", f"choose one of: {choices}")


def test_cli_choices_are_the_flow_parameter_choices() -> None:
    from typing import get_args

    from tallyflow.cli.ingest import FORMAT_CHOICES
    from tallyflow.tasks.ingest import SourceSpec

    fields = SourceSpec.model_fields
    assert FORMAT_CHOICES == get_args(fields["format"].annotation)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user@host/db", "bad database URL: Tallyflow needs PostgreSQL; got a 'mysql'"),
        ("not a url", "bad database URL: Could not parse"),
        ("postgresql://postgres@127.0.0.1:{port}/x", "cannot reach the database: "),
    ],
)
def test_database_url_errors(
    database_url: str, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("TALLYFLOW_DATABASE_URL", url.format(port=free_port()))
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 1
    _assert_one_line(result.output, message, "TALLYFLOW_DATABASE_URL")


def test_debug_shows_the_traceback(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--debug` sets TALLYFLOW_DEBUG for the process (its flow runs see it too); owning the
    # variable here puts it back afterwards, so later tests run without debug output.
    monkeypatch.setenv("TALLYFLOW_DEBUG", "0")
    result = runner.invoke(app, ["--debug", "ingest", "foo://x"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output
    assert "error: unknown URL scheme 'foo://'" in result.output


def test_a_failed_object_shows_its_reason(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "good.jsonl").write_text(jsonl([event(1)]))
    (tmp_path / "cut.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"trunc")
    result = runner.invoke(app, ["ingest", str(tmp_path), "--json"])
    assert result.exit_code == 1
    shown = json.loads(runner.invoke(app, ["runs", "--objects", "--json"]).stdout)
    rows = shown["failed"]
    assert [Path(r["object"]).name for r in rows] == ["cut.jsonl.gz"]
    # the failed object is the oldest not loaded: it holds the watermark, and says so
    assert Path(shown["watermark_holder"]["object"]).name == "cut.jsonl.gz"
    assert shown["watermark_holder"]["status"] == "failed"
    assert not shown["watermark_holder"]["dead"]
    assert rows[0]["error"] and rows[0]["attempts"] == 1
    (run,) = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert run["status"] == "failed" and "1 object(s) failed" in run["error"]
