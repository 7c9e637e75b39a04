"""``PlainParamsFlow`` stores a run's parameters exactly as Prefect's own ``Flow`` would, and
for the ingest flows' parameters it does so without importing FastAPI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prefect import Flow
from prefect.states import Completed
from pydantic import BaseModel, Field, TypeAdapter

from tallyflow.flows.ingest import ingest_events, reingest_object
from tallyflow.flows.plain_params import PlainParamsFlow
from tallyflow.tasks.ingest import SourceSpec, source_parameter


def _fn(source: Any = None, chunk_rows: Any = None, extra: Any = None) -> None:
    return None


PLAIN = PlainParamsFlow(fn=_fn, name="plain")
PREFECT = Flow(fn=_fn, name="prefect")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["_sa", "_sa_x", "_s", "sa", "k", "é", ""]) | st.text(max_size=5),
        inner, max_size=4),
    max_leaves=12,
)


class Aliased(BaseModel):
    name: str = Field(alias="theName")
    when: datetime
    values: tuple[int, ...] = ()
    inner: dict[str, Any] = {}


@settings(max_examples=300, deadline=None)
@given(options=st.dictionaries(st.text(max_size=6), JSON, max_size=4),
       mapping_options=st.dictionaries(st.text(max_size=6), JSON, max_size=3),
       pattern=st.none() | st.text(max_size=8),
       chunk_rows=st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=3))
def test_the_same_json_as_prefect_s_flow(options: dict[str, Any], mapping_options: dict[str, Any],
                                          pattern: str | None, chunk_rows: Any) -> None:
    spec = SourceSpec(url="file:///tmp/x", pattern=pattern, options=options,
                      mapping_options=mapping_options)
    for source in (spec, spec.model_dump(), None, "file:///tmp/y"):
        parameters = {"source": source, "chunk_rows": chunk_rows}
        assert PLAIN.serialize_parameters(parameters) == PREFECT.serialize_parameters(parameters)


def test_other_values_and_models_are_prefect_s_too() -> None:
    aliased = Aliased.model_validate({
        "theName": "n", "when": datetime(2026, 1, 1, tzinfo=UTC), "values": (1, 2),
        "inner": {"_sa_state": 1, "a": [{"_sa": 2}]}})
    form = TypeAdapter(source_parameter()).validate_python(
        {"kind": "fsspec", "url": "file:///tmp/x", "pattern": "*.jsonl",
         "options": {"endpoint_url": "http://minio:9000"}, "mapping_options": {"_sa": 1}})
    assert type(form).__name__ != "SourceSpec"  # the form's model of the fsspec kind
    for parameters in (
        {"source": form, "chunk_rows": 10},
        {"source": aliased},
        {"source": datetime(2026, 1, 1, tzinfo=UTC)},  # not plain: Prefect's encoder
        {"source": Completed()},  # a state: Prefect's placeholder
        {"source": {"nested": aliased}},
        {"source": b"bytes", "extra": 1},
        {},
    ):
        assert PLAIN.serialize_parameters(parameters) == PREFECT.serialize_parameters(parameters)
    assert PLAIN.serialize_parameters({"source": aliased})["source"] == {
        "theName": "n", "when": "2026-01-01T00:00:00Z", "values": [1, 2], "inner": {"a": [{}]}}


def test_the_ingest_flows_are_plain_params_flows() -> None:
    assert isinstance(ingest_events, PlainParamsFlow)
    assert isinstance(reingest_object, PlainParamsFlow)
    assert ingest_events.name == "ingest-events"


def test_serializing_ingest_parameters_does_not_import_fastapi() -> None:
    code = ("import sys\n"
            "from tallyflow.flows.ingest import ingest_events\n"
            "from tallyflow.tasks.ingest.sources import SourceSpec\n"
            "spec = SourceSpec(url='file:///tmp/x', options={'a': [1]})\n"
            "print(ingest_events.serialize_parameters({'source': spec, 'chunk_rows': 5}))\n"
            "print('fastapi' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == "False", done.stdout
