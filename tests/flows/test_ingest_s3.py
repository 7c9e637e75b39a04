"""S3 through a real endpoint (moto's server on loopback), with credentials from a Secret block
that must never show up in flow parameters, logs or artifacts."""

from __future__ import annotations

import asyncio
import uuid

import boto3
import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest.sources import SourceError, SourceSpec
from tests.factories import event, jsonl
from tests.storage import S3Server

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY = "AKIATALLYFLOWTEST01"
SECRET = "sEcReT-must-not-leak-7f3a"  # only for the inline-credentials refusal
AWS_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _run_records(flow_run_id: object) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
        return repr(run.parameters) + repr(logs) + repr(artifacts)

    return asyncio.run(read())


def _bucket_with_two_objects(server: S3Server) -> str:
    bucket = f"tf-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=server.key, aws_secret_access_key=server.secret,
    )
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="2025/11/24/a.jsonl", Body=jsonl([event(1), event(2)]))
    client.put_object(Bucket=bucket, Key="2025/11/24/b.csv", Body=(
        "transaction_id,external_subscription_id,code,timestamp,properties.tokens\n"
        "c-1,sub_acme_001,mistral_tokens,1764000000,42\n"
    ))
    return bucket


def _spec_with_block(server: S3Server, bucket: str, key: str, secret: str) -> SourceSpec:
    from prefect.blocks.system import Secret

    block = f"s3-{uuid.uuid4().hex[:8]}"
    Secret(value={"key": key, "secret": secret}).save(block)
    return SourceSpec(
        url=f"s3://{bucket}/2025", options={"endpoint_url": server.endpoint, "secret_block": block}
    )


def test_s3_ingest_with_secret_block_credentials(
    engine: Engine, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The block is the only way in: no credentials in the environment or in AWS config files,
    # and the server refuses unsigned or wrongly signed requests.
    for name in AWS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    bucket = _bucket_with_two_objects(s3_server)
    spec = _spec_with_block(s3_server, bucket, s3_server.key, s3_server.secret)
    state = ingest_events(spec, return_state=True)
    summary = state.result()
    assert (summary["objects"], summary["accepted"]) == (2, 3)
    with engine.connect() as conn:
        paths = conn.execute(text("select path from ingest_objects order by path")).scalars().all()
    assert paths == [f"s3://{bucket}/2025/11/24/a.jsonl", f"s3://{bucket}/2025/11/24/b.csv"]
    records = _run_records(state.state_details.flow_run_id)
    assert s3_server.secret not in records and s3_server.key not in records


def test_s3_ingest_with_a_wrong_secret_in_the_block_reads_nothing(
    engine: Engine, s3_credentials: S3Server
) -> None:
    """The server checks credentials: the block's secret is what decides, even when the
    environment holds valid ones."""
    s3_server = s3_credentials
    bucket = _bucket_with_two_objects(s3_server)
    spec = _spec_with_block(s3_server, bucket, s3_server.key, "not-the-secret")
    state = ingest_events(spec, return_state=True)
    assert state.is_failed(), state
    with pytest.raises(SourceError, match=r"access denied .*\(SignatureDoesNotMatch\)"):
        state.result()
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from events")).scalar_one() == 0


def test_inline_credentials_are_refused() -> None:
    from tallyflow.errors import SourceError
    from tallyflow.tasks.ingest import build_source

    with pytest.raises(SourceError, match="secret: Extra inputs are not permitted"):
        build_source(SourceSpec(url="s3://b/p", options={"key": KEY, "secret": SECRET}))
