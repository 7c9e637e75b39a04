"""The flow's ``source`` parameter: a discriminated union of the registered kinds, each with
only the fields it uses and its own typed options (what the Prefect form renders)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tallyflow.tasks.ingest import Source, SourceSpec, as_spec, plugins, source_parameter


class QueueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch: int = Field(100, ge=1, description="Messages per object")


class QueueSource(Source):
    kind = "queue"
    Config = QueueOptions
    spec_fields = ()  # its records are Lago events already: no mapping to choose

    def list(self):
        raise NotImplementedError

    def open(self, ref):
        raise NotImplementedError


@pytest.fixture()
def with_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[TypeAdapter]:
    monkeypatch.setitem(plugins.registry().sources, "queue", QueueSource)
    yield TypeAdapter(source_parameter())


def test_the_form_is_a_choice_of_kinds_with_their_own_fields(with_queue: TypeAdapter) -> None:
    schema = with_queue.json_schema()
    assert set(schema["discriminator"]["mapping"]) == {"fsspec", "queue"}
    forms = {name: form for name, form in schema["$defs"].items() if name.endswith("Form")}
    queue = forms["QueueSourceForm"]["properties"]
    fsspec = forms["FsspecSourceForm"]["properties"]
    assert set(queue) == {"kind", "url", "options"}  # no mapping or format it would ignore
    assert {"pattern", "format", "mapping", "mapping_options", "options"} <= set(fsspec)
    assert "openai-chat" in fsspec["mapping"]["anyOf"][0]["enum"]
    assert schema["$defs"]["QueueOptions"]["properties"]["batch"]["minimum"] == 1


def test_values_validate_per_kind(with_queue: TypeAdapter) -> None:
    value = with_queue.validate_python({"kind": "queue", "url": "q://x", "options": {"batch": 5}})
    assert as_spec(value) == SourceSpec(kind="queue", url="q://x", options={"batch": 5})
    # a generic spec (code, older deployments) still fits, its unused defaults dropped
    generic = with_queue.validate_python(SourceSpec(kind="queue", url="q://x"))
    assert as_spec(generic).kind == "queue"
    for wrong in (
        {"kind": "queue", "url": "q://x", "options": {"batch": 0}},
        {"kind": "queue", "url": "q://x", "mapping": "openai-chat"},  # not offered: refused
        {"kind": "fsspec", "url": "/x", "options": {"batch": 5}},
        {"kind": "fsspec", "url": "/x", "mapping": "nope"},
        {"kind": "kafka", "url": "/x"},
    ):
        with pytest.raises(ValidationError):
            with_queue.validate_python(wrong)
    assert with_queue.validate_python({"url": "/x", "mapping": "my.yaml"}).mapping == "my.yaml"


def test_a_setting_the_source_does_not_take_is_refused(with_queue: TypeAdapter) -> None:
    from tallyflow.errors import SourceError
    from tallyflow.tasks.ingest import build_source

    build_source(SourceSpec(kind="queue", url="q://x"))  # defaults: fine
    with pytest.raises(SourceError, match="does not take format"):
        build_source(SourceSpec(kind="queue", url="q://x", format="csv"))
    with pytest.raises(SourceError, match="does not take mapping"):
        build_source(SourceSpec(kind="queue", url="q://x", mapping="openai-chat"))
