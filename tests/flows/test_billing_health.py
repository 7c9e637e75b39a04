"""Billing health, one look away (tasks/health.py): the same figures from the task, the hourly
run's ``billing-health`` artifact and INFO log, ``tallyflow health [--json]``, the API's
``/api/v1/tallyflow/health`` and the Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.flows.billing import HEALTH_KEY, billing_cycle
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.health import billing_health, metrics_text
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tallyflow.tasks.wallets import add_alert_rule
from tests.factories import jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")
MISTRAL = Path(__file__).parents[2] / "examples" / "mistral"
HOUR = datetime(2025, 11, 24, 17, tzinfo=UTC)


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC, limit=1,
            )
        return str(found[0].data)

    return asyncio.run(read())


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _metrics(body: bytes | str) -> dict[str, float]:
    raw = body.decode() if isinstance(body, bytes) else body
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(raw):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{label}}}" if label else "")] = sample.value
    return out


def test_an_empty_database_is_healthy_and_says_nothing_happened_yet(engine: Engine) -> None:
    health = billing_health(engine, HOUR)
    assert health.ok and health.problems == []
    assert health.last_good_hour is None and health.watermark is None
    assert health.drafts_waiting == 0 and health.objects_failed == 0
    metrics = _metrics(metrics_text(engine))
    assert metrics["tallyflow_up"] == 1 and metrics["tallyflow_healthy"] == 1
    assert metrics["tallyflow_objects_failed"] == 0


def _bill_acme(engine: Engine, folder: Path) -> None:
    assert apply_catalog(engine, [MISTRAL]).ok
    folder.mkdir()
    (folder / "usage.jsonl").write_text(jsonl([
        {"transaction_id": "t1", "external_subscription_id": "sub_acme_001",
         "code": "mistral_tokens", "timestamp": "2025-11-24T15:00:00Z",
         "properties": {"tokens": 2_000_000, "model": "mistral-small", "type": "input"}},
    ]))
    (folder / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    source = build_source(SourceSpec(url=folder.as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)
    # a threshold above the balance: the wallet run opens an alert
    add_alert_rule(engine, "balance_below", Decimal(500), "acme")
    billing_cycle(hour=HOUR)


def test_the_hourly_run_keeps_the_health_artifact_and_logs_its_figures(
    engine: Engine, tmp_path: Path
) -> None:
    # the tests keep Prefect at WARNING (as the CLI does); served runs log at INFO
    runs_logger = logging.getLogger("prefect.flow_runs")
    kept, level = _Kept(), runs_logger.level
    runs_logger.addHandler(kept)
    runs_logger.setLevel(logging.INFO)
    try:
        _bill_acme(engine, tmp_path / "events")
    finally:
        runs_logger.removeHandler(kept)
        runs_logger.setLevel(level)
    page = _artifact(HEALTH_KEY)
    with engine.connect() as conn:
        drafts = conn.execute(text("select count(*) from invoices where status = 'draft'")
                              ).scalar_one()
        pdfs = conn.execute(text(  # the paid top-up's credit invoice, finalized at once
            "select count(*) from invoices v where status = 'finalized'"
            " and not exists (select 1 from invoice_pdfs p where p.invoice_id = v.id)")
        ).scalar_one()
    assert pdfs == 1
    assert drafts >= 1  # ended periods, and no ingest run's listing: no watermark yet
    assert page.startswith("# Billing health")
    assert "| last completed billing hour | 2025-11-24T17:00:00+00:00 |" in page
    assert "| objects failed to load | 1 |" in page
    assert f"| drafts waiting | {drafts} (ingest_watermark {drafts}) |" in page
    assert "| wallets below threshold | 1 |" in page
    assert f"| invoices awaiting PDFs | {pdfs} |" in page
    assert "| acme |" in page and "balance_below" in page
    assert "needs attention: 1 object(s) failed to load" in page
    logged = [m for m in kept.messages if m.startswith("billing health")]
    assert logged and "objects failed 1" in logged[-1] and "wallets below threshold 1" in logged[-1]
    assert f"drafts waiting {drafts} (ingest_watermark {drafts})" in logged[-1]
    assert logged[-1].endswith(f"PDFs pending {pdfs}")

    # the same figures from the task, the command, the metrics
    health = billing_health(engine, datetime.now(UTC))
    assert health.last_good_hour == HOUR
    assert health.last_run is not None and health.last_run["status"] == "completed"
    assert health.drafts == {"in_period_or_grace": 0, "ingest_watermark": drafts,
                             "next_cycle": 0}
    assert health.wallets_below_count == 1 and health.wallets_negative_count == 0
    assert health.pdfs_pending == pdfs and health.contained == []

    from tallyflow.cli.main import app

    shown = CliRunner().invoke(app, ["health", "--json"])
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.output)
    assert figures["ok"] is False and figures["objects_failed"] == 1
    assert figures["last_good_hour"] == "2025-11-24T17:00:00+00:00"
    assert figures["drafts"]["ingest_watermark"] == drafts
    assert figures["wallets_below_threshold_listed"][0]["customer"] == "acme"
    plain = CliRunner().invoke(app, ["health"])
    assert plain.exit_code == 0 and "| objects failed to load | 1 |" in plain.output

    metrics = _metrics(metrics_text(engine))
    assert metrics["tallyflow_healthy"] == 0
    assert metrics["tallyflow_last_good_billing_hour_timestamp_seconds"] == HOUR.timestamp()
    assert metrics["tallyflow_objects_failed"] == 1
    assert metrics["tallyflow_drafts_waiting{reason=ingest_watermark}"] == drafts
    assert metrics["tallyflow_wallets_below_threshold"] == 1
    assert metrics["tallyflow_invoice_pdfs_pending"] == pdfs


def test_a_database_the_metrics_cannot_read_is_reported_down(
    engine: Engine,
) -> None:
    from sqlalchemy import create_engine

    gone = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert _metrics(metrics_text(gone)) == {"tallyflow_up": 0.0}
