"""The billing run's artifact: per customer, what this run deducted and credited back (read from
the ledger rows it posted), with links to its sub-runs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tallyflow.flows.billing import billing_cycle
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tests.factories import jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")
MISTRAL = Path(__file__).parents[2] / "examples" / "mistral"
HOUR = datetime(2025, 11, 24, 17, tzinfo=UTC)


def _latest_billing_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["billing-cycle"])),
                sort=ArtifactSort.CREATED_DESC, limit=1,
            )
        return str(found[0].data)

    return asyncio.run(read())


def test_the_artifact_shows_amounts_deducted_then_credited_back_per_customer(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYFLOW_WALLETS_SETTLE_PAID", "1")
    assert apply_catalog(engine, [MISTRAL]).ok
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "usage.jsonl").write_text(jsonl([
        {"transaction_id": "t1", "external_subscription_id": "sub_acme_001",
         "code": "mistral_tokens", "timestamp": "2025-11-24T15:00:00Z",
         "properties": {"tokens": 2_000_000, "model": "mistral-small", "type": "input"}},
        {"transaction_id": "t2", "external_subscription_id": "sub_acme_001",
         "code": "mistral_tokens", "timestamp": "2025-11-24T15:30:00Z",
         "properties": {"tokens": 1, "model": "mistral-large", "type": "output"}},
    ]))
    source = build_source(SourceSpec(url=(tmp_path / "events").as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)

    billing_cycle(hour=HOUR)
    first = _latest_billing_artifact()
    assert first.startswith("# Billing 2025-11-24T17:00Z")
    assert "| acme | 1400 | 0 | 1 |" in first  # $2 small input + one $12 large-output package
    assert "1400 cents deducted, 0 cents credited back" in first
    assert "usage-snapshot run" in first and "wallet-deductions run" in first

    # A price cut on large output ($12 -> $6 per 1M): the next hour credits 600 cents back.
    plan = json.loads((MISTRAL / "plan.json").read_text())
    for charge_filter in plan["plan"]["charges"][0]["filters"]:
        if charge_filter["properties"]["amount"] == "12":
            charge_filter["properties"]["amount"] = "6"
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for name in ("billable_metric", "customer", "subscription", "wallet"):
        (catalog / f"{name}.json").write_text((MISTRAL / f"{name}.json").read_text())
    (catalog / "plan.json").write_text(json.dumps(plan))
    assert apply_catalog(engine, [catalog]).ok

    billing_cycle(hour=HOUR + timedelta(hours=1))
    second = _latest_billing_artifact()
    assert "# Billing 2025-11-24T18:00Z" in second
    assert "| acme | 0 | 600 | 1 |" in second

    billing_cycle(hour=HOUR + timedelta(hours=1))  # rerun: the ledger already matches
    assert "No wallet postings in this run" in _latest_billing_artifact()
