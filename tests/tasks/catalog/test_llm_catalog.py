"""The example LLM catalog (examples/llm) prices every token type the built-in mappings emit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tallyflow.models.mappings import DeclarativeMapping
from tallyflow.models.otel_genai import _TYPES as OTEL_TYPES
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import (
    SourceSpec,
    build_source,
    ingest_object,
    plugins,
    register_objects,
)

LLM = Path(__file__).parents[3] / "examples" / "llm"
DECLARATIVE = sorted(name for name, m in plugins.mappings().items()
                     if isinstance(m, DeclarativeMapping))


def _priced_types() -> set[str]:
    plan = json.loads((LLM / "plan.json").read_text())["plan"]
    return {t for charge in plan["charges"] for f in charge["filters"] for t in f["values"]["type"]}


@pytest.mark.parametrize("name", DECLARATIVE)
def test_every_type_a_mapping_emits_is_priced(name: str) -> None:
    mapping = plugins.mappings()[name]
    assert mapping.spec.code.const == "llm_tokens"
    emitted = set(mapping.spec.each.fields) if mapping.spec.each else set()
    assert emitted and emitted <= _priced_types(), f"{name} emits {emitted - _priced_types()}"


def test_every_type_otel_genai_emits_is_priced() -> None:
    assert {kind for kind, *_ in OTEL_TYPES} <= _priced_types()


def test_the_metric_filter_lists_every_priced_type() -> None:
    metric = json.loads((LLM / "billable_metric.json").read_text())["billable_metric"]
    assert set(metric["filters"][0]["values"]) == _priced_types()


@pytest.mark.parametrize("name", DECLARATIVE)
def test_golden_events_of_the_subscriber_are_billable(
    engine: Engine, tmp_path: Path, name: str
) -> None:
    assert apply_catalog(engine, [LLM]).ok
    mapping = plugins.mappings()[name]
    shutil.copy(mapping.golden, tmp_path / "golden.jsonl")
    source = build_source(SourceSpec(url=tmp_path.as_uri(), mapping=name))
    (object_id,) = register_objects(engine, source, source.list())
    result = ingest_object(engine, source, object_id)
    expected = json.loads(mapping.expected.read_text())["events"]
    others = sum(e["external_subscription_id"] != "sub_acme" for e in expected)
    assert result.accepted == len(expected)
    assert result.unbillable == others  # every sub_acme event meets a priced charge
