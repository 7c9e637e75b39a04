"""``tallyflow archive`` through the CLI: to a folder and to S3 (a real endpoint on loopback),
and its refusal as one line with a hint."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pyarrow.parquet as pq
from s3fs import S3FileSystem
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import ArchiveOutput
from tests.tasks.archive.test_archive import _events, _march_closed
from tests.tasks.archive.test_archive_snapshots import _march_snapshots

runner = CliRunner()


def test_archive_to_a_folder_and_its_refusal(engine: Engine, tmp_path: Path) -> None:
    _march_closed(engine, tmp_path)
    refused = runner.invoke(app, ["archive", "--before", "2025-04-05T00:00:00Z", "--to",
                                  str(tmp_path / "archive")])
    assert refused.exit_code == 1
    assert "error: cannot archive before 2025-04-05T00:00:00+00:00: periods of" in refused.output
    assert "hint: close those periods first" in refused.output
    done = runner.invoke(app, ["archive", "--before", "2025-04-01T04:00:00Z", "--to",
                               str(tmp_path / "archive")])
    assert done.exit_code == 0, done.output
    assert "archived 2 event(s) before 2025-04-01T04:00:00+00:00 into 1 file(s)" in done.stdout
    assert "usage snapshot(s) of" in done.stdout
    zoneless = runner.invoke(app, ["archive", "--before", "2025-04-01T04:00:00", "--to",
                                   str(tmp_path / "archive")])
    assert zoneless.exit_code != 0 and "Traceback" not in zoneless.output


def test_archive_to_s3(engine: Engine, tmp_path: Path, s3_endpoint: str) -> None:
    _march_snapshots(engine, tmp_path)  # events of March, and a March snapshot no one names
    bucket = f"tf-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    done = runner.invoke(app, ["archive", "--before", "2025-04-01T04:00:00Z", "--to",
                               f"s3://{bucket}/history", "--endpoint-url", s3_endpoint,
                               "--json"])
    assert done.exit_code == 0, done.output
    moved = json.loads(done.stdout)
    assert mismatches(moved, ArchiveOutput) == []
    [url] = moved["files"]
    assert url.startswith(f"s3://{bucket}/history/events/before=")
    fs = S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    assert pq.read_table(fs.open(url, "rb")).num_rows == 4
    assert _events(engine) == ["b1", "b2"]
    [month] = moved["snapshots"]["files"]
    assert month.startswith(f"s3://{bucket}/history/usage_snapshots/month=2025-03/")
    assert pq.read_table(fs.open(month, "rb")).num_rows == moved["snapshots"]["rows"] >= 1
