"""``/api/v1/tallyflow/health`` (with a key, as ``tallyflow health --json``) and ``/metrics``
(no key, as Prometheus scrapes): the figures of tasks/health.py over HTTP."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import BillingHealthFigures
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects


def _fail_one_object(engine: Engine, folder: Path) -> None:
    folder.mkdir()
    (folder / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    source = build_source(SourceSpec(url=folder.as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)


def test_the_health_endpoint_shows_the_figures_to_a_key_holder(
    engine: Engine, client: TestClient, tmp_path: Path
) -> None:
    ok = client.get("/api/v1/tallyflow/health")
    assert ok.status_code == 200
    assert ok.json()["health"]["ok"] is True and ok.json()["health"]["objects_failed"] == 0
    _fail_one_object(engine, tmp_path / "events")
    health = client.get("/api/v1/tallyflow/health").json()["health"]
    assert mismatches(health, BillingHealthFigures) == []
    assert health["ok"] is False and health["objects_failed"] == 1
    assert health["problems"] == ["1 object(s) failed to load"]
    assert set(health["drafts"]) == {"in_period_or_grace", "ingest_watermark", "next_cycle"}
    nobody = client.get("/api/v1/tallyflow/health", headers={"Authorization": "Bearer nope"})
    assert nobody.status_code == 401


def test_metrics_are_scraped_without_a_key(
    engine: Engine, client: TestClient, tmp_path: Path
) -> None:
    _fail_one_object(engine, tmp_path / "events")
    scraped = client.get("/metrics", headers={"Authorization": ""})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    values = {s.name: s.value for f in text_string_to_metric_families(scraped.text)
              for s in f.samples if not s.labels}
    assert values["tallyflow_up"] == 1 and values["tallyflow_healthy"] == 0
    assert values["tallyflow_objects_failed"] == 1
    assert values["tallyflow_wallets_negative"] == 0
