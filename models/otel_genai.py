"""OpenTelemetry GenAI spans (OTLP JSON) -> token events: a coded mapping.

One record is one OTLP/JSON export line (``{"resourceSpans": [...]}``, what the collector's
file exporter writes), so one record holds many spans and gives many events. Per span with
GenAI usage (both attribute generations: ``gen_ai.usage.input_tokens``/``output_tokens`` and
the older ``prompt_tokens``/``completion_tokens``): ``input`` (the input count minus the cache
reads and writes it includes, as the conventions define it), ``cache_read``, ``cache_write``,
``output``. Spans without GenAI usage (HTTP, DB, ...) give none.

Once per LLM call (docs/llm-usage.md): only the span of the call itself bills. A span whose
``gen_ai.operation.name`` is an agent, workflow or tool operation (``invoke_agent``, ...) sums
its children's calls, so its usage is not billed (unless ``bill_agent_spans``, for a framework
that records no child spans). The rule reads one span only, so a trace split across objects
bills the same as a whole one.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tallyflow.models.events import Reason, Rejection
from tallyflow.models.mappings import UNMAPPED_USAGE_FIELD, Events, Mapping, MapResult
from tallyflow.models.number_rule import in_range, out_of_range_message
from tallyflow.models.rating.money import exact_number

# (type, current attribute, older attribute)
_TYPES = (
    ("input", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    ("cache_read", "gen_ai.usage.cache_read.input_tokens", None),
    ("cache_write", "gen_ai.usage.cache_creation.input_tokens", None),
    ("output", "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
)
_KNOWN = frozenset(name for _, *names in _TYPES for name in names if name)
_USAGE_PREFIX = "gen_ai.usage."
# Operations that aggregate model calls made below them (their usage is their children's).
AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow",
                                  "execute_tool"})


class OtelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field("llm_tokens", description="Metric code of the events")
    subscriber_attribute: str = Field(
        "user.id", description="Span (else resource) attribute holding the subscriber"
    )
    bill_agent_spans: bool = Field(
        False, description="Bill usage on agent/workflow/tool spans too (only when no child "
        "span records the calls: else each call is billed twice)"
    )
    strict: bool = Field(
        False, description="Reject a record with a gen_ai.usage.* attribute this mapping does "
        "not know, instead of billing what it knows and listing the name"
    )


def _attributes(items: Any) -> dict[str, Any]:
    """OTLP's [{key, value: {stringValue | intValue | doubleValue | boolValue}}] as a dict."""
    found: dict[str, Any] = {}
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and isinstance(item.get("value"), dict) and item["value"]:
            found[str(item.get("key"))] = next(iter(item["value"].values()))
    return found


class OtelGenAI(Mapping):
    name = "otel-genai"
    description = (
        "OpenTelemetry GenAI spans, OTLP JSON export lines: gen_ai.usage.{input,output}_tokens,"
        " gen_ai.request.model, subscriber from a span or resource attribute (user.id)"
    )
    Options = OtelOptions
    request_identity = True  # gen_ai.response.id, when the span has it

    def map(self, record: Any, options: BaseModel) -> MapResult:
        assert isinstance(options, OtelOptions)
        if not isinstance(record, dict) or not isinstance(record.get("resourceSpans"), list):
            return Rejection(Reason.MISSING_FIELD, "resourceSpans",
                             "an OTLP JSON export line must have a resourceSpans list")
        events: list[dict[str, Any]] = []
        unknown: list[str] = []
        for resource_spans in record["resourceSpans"]:
            if not isinstance(resource_spans, dict):
                continue
            resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
            for scope in resource_spans.get("scopeSpans") or ():
                for span in (scope.get("spans") or ()) if isinstance(scope, dict) else ():
                    made = self._span(span, resource, options, unknown)
                    if isinstance(made, Rejection):
                        return made
                    events.extend(made)
        if unknown and options.strict:
            return Rejection(UNMAPPED_USAGE_FIELD, unknown[0],
                             f"usage attributes this mapping does not know: {', '.join(unknown)}"
                             " (strict: the record is not billed)")
        return Events(events, unknown)

    def _span(self, span: Any, resource: dict[str, Any], options: OtelOptions,
              unknown: list[str]) -> list[dict[str, Any]] | Rejection:
        if not isinstance(span, dict):
            return []
        attributes = _attributes(span.get("attributes"))
        usage = {key for key in attributes if key.startswith(_USAGE_PREFIX)}
        if not usage:
            return []  # not a GenAI call
        unknown.extend(key for key in sorted(usage - _KNOWN) if key not in unknown)
        operation = attributes.get("gen_ai.operation.name")
        if operation in AGGREGATE_OPERATIONS and not options.bill_agent_spans:
            return []  # its children's calls bill (docs/llm-usage.md, once per LLM call)
        where = f"span {span.get('spanId')}"
        subscriber = attributes.get(options.subscriber_attribute,
                                    resource.get(options.subscriber_attribute))
        stamp = exact_number(span.get("endTimeUnixNano") or span.get("startTimeUnixNano"))
        if not span.get("traceId") or not span.get("spanId"):
            return Rejection(Reason.MISSING_FIELD, "spanId", f"{where}: traceId/spanId missing")
        counts: dict[str, Decimal] = {}
        for kind, key, older in _TYPES:
            name = key if key in attributes else older
            if name is None or name not in attributes:
                continue
            raw = attributes[name]
            tokens = exact_number(raw)
            if tokens is not None and not in_range(tokens):  # docs/architecture.md §7
                return Rejection(Reason.NUMBER_OUT_OF_RANGE, name,
                                 f"{where}: {out_of_range_message(name, tokens)}")
            if (tokens is None or isinstance(raw, bool) or tokens < 0
                    or tokens != tokens.to_integral_value()):
                return Rejection(Reason.INVALID_NUMBER, name, f"{where}: {name} is {raw!r}")
            counts[kind] = tokens
        if "input" in counts:
            # the conventions count cache reads and writes inside the input tokens
            cached = counts.get("cache_read", Decimal(0)) + counts.get("cache_write", Decimal(0))
            if cached > counts["input"]:
                return Rejection(Reason.INVALID_NUMBER, "gen_ai.usage.input_tokens",
                                 f"{where}: input tokens {counts['input']} are fewer than the "
                                 f"cache reads and writes they include ({cached})")
            counts["input"] -= cached
        request = attributes.get("gen_ai.response.id")
        properties: dict[str, Any] = {
            "model": attributes.get("gen_ai.request.model")
            or attributes.get("gen_ai.response.model"),
            "provider": attributes.get("gen_ai.provider.name")
            or attributes.get("gen_ai.system"),
        }
        if request is not None:
            properties["request_id"] = str(request)
        events = []
        for kind, _, _ in _TYPES:
            tokens = counts.get(kind)
            if not tokens:
                continue
            events.append({
                "transaction_id": f"{span['traceId']}:{span['spanId']}:{kind}",
                "external_subscription_id": subscriber,
                "code": options.code,
                "timestamp": None if stamp is None else stamp / Decimal(10**9),
                "properties": {**properties, "type": kind, "tokens": int(tokens)},
            })
        return events


OTEL_GENAI = OtelGenAI()
_FIXTURES = Path(__file__).resolve().parents[1] / "tasks" / "ingest" / "mappings"
OTEL_GENAI.golden = _FIXTURES / "otel_genai.golden.jsonl"
OTEL_GENAI.expected = _FIXTURES / "otel_genai.expected.json"
