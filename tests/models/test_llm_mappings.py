"""The built-in LLM usage mappings, without a database: each golden fixture gives exactly its
expected events, rejects and unknown usage fields; every usage field of every golden record
names the provider page that documents it; unknown fields are listed, or refused when strict;
the span rule bills one LLM call once; zone-less timestamps take the declared zone."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallyflow.models.events import Rejection
from tallyflow.models.mappings import (
    MISSING,
    DeclarativeMapping,
    Events,
    MappingInvalid,
    lookup,
    path_problem,
)
from tallyflow.models.otel_genai import OTEL_GENAI, _attributes
from tallyflow.tasks.ingest import plugins
from tests.llm_golden import outcome

LLM = sorted(name for name, m in plugins.mappings().items()
             if isinstance(m, DeclarativeMapping) or m is OTEL_GENAI)


def _golden(name: str) -> tuple[list[str], dict[str, Any]]:
    mapping = plugins.mappings()[name]
    assert mapping.golden is not None and mapping.expected is not None
    return (mapping.golden.read_text().splitlines(),
            json.loads(mapping.expected.read_text()))


@pytest.mark.parametrize("name", LLM)
def test_golden_records_give_exactly_the_expected_events(name: str) -> None:
    lines, expected = _golden(name)
    got = outcome(plugins.mappings()[name], lines)
    assert got["events"] == expected["events"]
    assert got["rejects"] == expected["rejects"]
    assert got["duplicates"] == expected["duplicates"]
    assert got["unmapped_usage_fields"] == expected["unmapped_usage_fields"]


def _usage_fields(name: str, record: Any) -> set[str]:
    """Every usage field present in a record, named as the unknown-field report names them."""
    mapping = plugins.mappings()[name]
    if mapping is OTEL_GENAI:
        return {key for rs in record.get("resourceSpans", [])
                for scope in rs.get("scopeSpans", []) for span in scope.get("spans", [])
                for key in _attributes(span.get("attributes"))
                if key.startswith("gen_ai.usage.")}
    assert isinstance(mapping, DeclarativeMapping)
    blind = copy.copy(mapping)
    blind.known = frozenset()
    return set(blind.unmapped(record))


@pytest.mark.parametrize("name", LLM)
def test_every_usage_field_of_a_golden_record_names_its_documentation(name: str) -> None:
    lines, expected = _golden(name)
    docs = {entry["row"]: entry["fields"] for entry in expected["docs"]}
    assert sorted(docs) == list(range(1, len(lines) + 1)), "one docs entry per golden record"
    for row, line in enumerate(lines, start=1):
        record = json.loads(line)
        fields = _usage_fields(name, record) if isinstance(record, dict) else set()
        unknown = set(expected["unmapped_usage_fields"])
        undocumented = {f for f in fields - unknown if not any(
            f == k or f.startswith((f"{k}.", f"{k}[]")) for k in docs[row])}
        assert not undocumented, f"{name} row {row}: no documentation page for {undocumented}"
        assert all(url.startswith("https://") for url in docs[row].values())


# Fields a golden record carries on purpose as "what a provider adds tomorrow"; any other
# field of a golden record must be billed as a type or named under ignore with a reason.
DELIBERATELY_UNKNOWN = {"openai-chat": {"usage.prompt_tokens_details.image_tokens"}}


@pytest.mark.parametrize("name", LLM)
def test_every_documented_usage_field_is_billed_or_named(name: str) -> None:
    _, expected = _golden(name)
    assert set(expected["unmapped_usage_fields"]) == DELIBERATELY_UNKNOWN.get(name, set())


CHAT = plugins.mappings()["openai-chat"]


def _chat(usage: dict[str, Any], **options: Any) -> Any:
    record = {"id": "c1", "user": "s", "created": 1764000000, "model": "m", "usage": usage}
    return CHAT.map(record, CHAT.options(options))


def test_an_unknown_usage_field_is_billed_around_and_listed() -> None:
    result = _chat({"prompt_tokens": 10, "completion_tokens": 2,
                    "prompt_tokens_details": {"image_tokens": 3}, "new_thing": {"x": 1}})
    assert type(result) is Events
    assert [(e["properties"]["type"], e["properties"]["tokens"]) for e in result] == [
        ("input", 10), ("output", 2)]
    assert result.unmapped == ("usage.prompt_tokens_details.image_tokens", "usage.new_thing.x")


def test_strict_rejects_a_record_with_an_unknown_usage_field() -> None:
    spec = CHAT.spec.model_copy(update={"strict": True})
    strict = DeclarativeMapping(spec, "test")
    record = {"id": "c1", "user": "s", "created": 1, "usage": {"prompt_tokens": 1,
                                                              "surprise_tokens": 4}}
    result = strict.map(record, strict.options({}))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("unmapped_usage_field", "usage.surprise_tokens")
    fine = strict.map({**record, "usage": {"prompt_tokens": 1}}, strict.options({}))
    assert type(fine) is Events and not fine.unmapped


def test_audio_tokens_are_not_billed_as_text() -> None:
    result = _chat({"prompt_tokens": 100, "completion_tokens": 50,
                    "prompt_tokens_details": {"audio_tokens": 60, "cached_tokens": 10},
                    "completion_tokens_details": {"audio_tokens": 40, "reasoning_tokens": 5}})
    assert {e["properties"]["type"]: e["properties"]["tokens"] for e in result} == {
        "input": 30, "cache_read": 10, "audio_input": 60, "output": 10, "audio_output": 40}


def test_bedrock_cache_writes_split_by_ttl() -> None:
    mapping = plugins.mappings()["bedrock-converse"]
    usage = {"inputTokens": 5, "outputTokens": 1, "cacheWriteInputTokens": 700,
             "cacheDetails": [{"ttl": "1h", "inputTokens": 300}, {"ttl": "1h", "inputTokens": 100},
                              {"ttl": "5m", "inputTokens": 300}]}
    record = {"requestId": "r", "user": "s", "timestamp": "2025-11-24T16:00:00Z",
              "usage": usage}
    result = mapping.map(record, mapping.options({}))
    assert {e["properties"]["type"]: e["properties"]["tokens"] for e in result} == {
        "input": 5, "cache_write": 300, "cache_write_1h": 400, "output": 1}
    assert not result.unmapped


def test_lookup_selects_list_items() -> None:
    record = {"d": [{"t": "1h", "n": 2}, {"t": "5m", "n": 3}, {"t": "1h", "n": "4"}]}
    assert lookup(record, "d[t=1h].n") == Decimal(6)
    assert lookup(record, "d[t=5m].n") == Decimal(3)
    assert lookup(record, "d[t=2h].n|d.0.n") == 2
    assert lookup(record, "d[t=1h]") == 2  # ending at the selection counts the items
    assert lookup(record, "d[t=2h]") is MISSING
    assert lookup({"d": {"t": "1h"}}, "d[t=1h].n") is MISSING


@pytest.mark.parametrize(
    ("path", "problem"),
    [("usage.prompt_tokens", None), ("a.0.b|c", None), ("a[ttl=1h].n", None),
     ("usage..x", "empty step"), ("usage.", "empty step"), ("a b", "not a key"),
     ("a[ttl].n", "not a key"), ("", "non-empty")],
)
def test_path_syntax(path: str, problem: str | None) -> None:
    found = path_problem(path)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_bad_path_is_refused_at_load() -> None:
    spec = {"name": "t", "transaction_id": "id", "external_subscription_id": "u",
            "code": {"const": "c"}, "each": {"fields": {"input": "usage..n"}}}
    with pytest.raises(MappingInvalid, match=r"each\.fields\.input.*empty step"):
        DeclarativeMapping.from_data(spec, "t")


def test_zone_less_timestamps_take_the_declared_zone() -> None:
    mapping = plugins.mappings()["anthropic-messages"]
    record = {"id": "m", "metadata": {"user_id": "s"}, "timestamp": "2025-11-24T16:05:00",
              "usage": {"input_tokens": 1}}
    refused = outcome(mapping, [json.dumps(record)])
    assert refused["rejects"][0]["reason"] == "timestamp_without_zone"
    paris = outcome(mapping, [json.dumps(record)], {"timezone": "Europe/Paris"})
    assert paris["events"][0]["timestamp"] == "2025-11-24T15:05:00+00:00"
    given = outcome(mapping, [json.dumps({**record, "timestamp": "2025-11-24T16:05:00Z"})],
                    {"timezone": "Europe/Paris"})
    assert given["events"][0]["timestamp"] == "2025-11-24T16:05:00+00:00"
    with pytest.raises(ValueError, match="IANA"):
        mapping.options({"timezone": "Mars/Olympus"})


def test_a_required_field_rejects_the_record_without_it() -> None:
    spec = {"name": "t", "transaction_id": "id", "external_subscription_id": "u",
            "code": {"const": "c"},
            "each": {"fields": {"input": {"path": "n", "required": True}, "output": "o"}}}
    mapping = DeclarativeMapping.from_data(spec, "t")
    result = mapping.map({"id": "1", "u": "s", "o": 3}, mapping.options({}))
    assert isinstance(result, Rejection) and (result.reason, result.field) == (
        "missing_field", "n")


def _span(span_id: str, operation: str | None, **usage: int) -> dict[str, Any]:
    attributes = [{"key": f"gen_ai.usage.{k}", "value": {"intValue": str(v)}}
                  for k, v in usage.items()]
    if operation:
        attributes.append({"key": "gen_ai.operation.name", "value": {"stringValue": operation}})
    return {"traceId": "t1", "spanId": span_id, "endTimeUnixNano": "1764000000000000000",
            "attributes": attributes}


def _otel(*spans: dict[str, Any], **options: Any) -> Any:
    record = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "user.id", "value": {"stringValue": "s"}}]},
        "scopeSpans": [{"spans": list(spans)}]}]}
    return OTEL_GENAI.map(record, OTEL_GENAI.options(options))


def _billed(result: Any) -> dict[tuple[str, str], int]:
    return {(e["transaction_id"].split(":")[1], e["properties"]["type"]):
            e["properties"]["tokens"] for e in result}


def test_an_agent_span_and_its_chat_span_bill_once() -> None:
    agent = _span("a", "invoke_agent", input_tokens=100, output_tokens=10)
    chat = _span("c", "chat", input_tokens=100, output_tokens=10)
    assert _billed(_otel(agent, chat)) == {("c", "input"): 100, ("c", "output"): 10}
    # a trace split across objects bills the same: the rule reads one span at a time
    assert _billed(_otel(agent)) == {}
    assert _billed(_otel(chat)) == {("c", "input"): 100, ("c", "output"): 10}
    assert _billed(_otel(agent, bill_agent_spans=True)) == {("a", "input"): 100,
                                                            ("a", "output"): 10}


def test_otel_cached_tokens_come_out_of_input_and_old_names_bill() -> None:
    span = _span("c", "chat", input_tokens=1000, output_tokens=5,
                 **{"cache_read.input_tokens": 700, "cache_creation.input_tokens": 200})
    assert _billed(_otel(span)) == {("c", "input"): 100, ("c", "cache_read"): 700,
                                    ("c", "cache_write"): 200, ("c", "output"): 5}
    old = _span("o", None, prompt_tokens=30, completion_tokens=3)
    assert _billed(_otel(old)) == {("o", "input"): 30, ("o", "output"): 3}
    odd = _span("x", "chat", input_tokens=10, **{"reasoning.output_tokens": 4})
    result = _otel(odd)
    assert _billed(result) == {("x", "input"): 10}
    assert result.unmapped == ("gen_ai.usage.reasoning.output_tokens",)
    refused = _otel(odd, strict=True)
    assert isinstance(refused, Rejection) and refused.reason == "unmapped_usage_field"
    too_many = _span("y", "chat", input_tokens=10, **{"cache_read.input_tokens": 11})
    assert isinstance(_otel(too_many), Rejection)


@given(prompt=st.integers(0, 10**7), completion=st.integers(0, 10**7),
       cached=st.integers(0, 10**6), audio_in=st.integers(0, 10**6),
       audio_out=st.integers(0, 10**6), reasoning=st.integers(0, 10**6))
def test_openai_chat_bills_every_token_once(prompt: int, completion: int, cached: int,
                                            audio_in: int, audio_out: int,
                                            reasoning: int) -> None:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
             "completion_tokens_details": {"audio_tokens": audio_out,
                                           "reasoning_tokens": reasoning}}
    result = _chat(usage)
    if cached + audio_in > prompt or audio_out > completion:
        assert isinstance(result, Rejection) and result.reason == "invalid_number"
        return
    assert sum(e["properties"]["tokens"] for e in result) == prompt + completion


@given(input_=st.integers(0, 10**6), read=st.integers(0, 10**6), five=st.integers(0, 10**6),
       hour=st.integers(0, 10**6), output=st.integers(0, 10**6))
def test_anthropic_bills_every_token_once_at_its_ttl(input_: int, read: int, five: int,
                                                      hour: int, output: int) -> None:
    mapping = plugins.mappings()["anthropic-messages"]
    record = {"id": "m", "metadata": {"user_id": "s"}, "timestamp": "2025-11-24T16:00:00Z",
              "usage": {"input_tokens": input_, "cache_read_input_tokens": read,
                        "cache_creation_input_tokens": five + hour,
                        "cache_creation": {"ephemeral_5m_input_tokens": five,
                                           "ephemeral_1h_input_tokens": hour},
                        "output_tokens": output}}
    result = mapping.map(record, mapping.options({}))
    billed = {e["properties"]["type"]: e["properties"]["tokens"] for e in result}
    assert billed.get("cache_write", 0) == five and billed.get("cache_write_1h", 0) == hour
    assert sum(billed.values()) == input_ + read + five + hour + output
    assert not result.unmapped
