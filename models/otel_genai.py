"""OpenTelemetry GenAI spans (OTLP JSON) -> token events: a coded mapping.

One record is one OTLP/JSON export line (``{"resourceSpans": [...]}``, what the collector's
file exporter writes), so one record holds many spans and gives many events: for each span
with ``gen_ai.usage.input_tokens`` / ``gen_ai.usage.output_tokens``, an ``input`` and an
``output`` event; spans without GenAI usage (HTTP, DB, ...) give none. The subscriber is a span
attribute (else a resource attribute) named by the ``subscriber_attribute`` option.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tallyflow.models.events import Reason, Rejection
from tallyflow.models.mappings import Events, Mapping, MapResult
from tallyflow.models.number_rule import in_range, out_of_range_message
from tallyflow.models.rating.money import exact_number

_TYPES = (("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens"))


class OtelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field("llm_tokens", description="Metric code of the events")
    subscriber_attribute: str = Field(
        "user.id", description="Span (else resource) attribute holding the subscriber"
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

    def map(self, record: Any, options: BaseModel) -> MapResult:
        assert isinstance(options, OtelOptions)
        if not isinstance(record, dict) or not isinstance(record.get("resourceSpans"), list):
            return Rejection(Reason.MISSING_FIELD, "resourceSpans",
                             "an OTLP JSON export line must have a resourceSpans list")
        events: list[dict[str, Any]] = []
        for resource_spans in record["resourceSpans"]:
            if not isinstance(resource_spans, dict):
                continue
            resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
            for scope in resource_spans.get("scopeSpans") or ():
                for span in (scope.get("spans") or ()) if isinstance(scope, dict) else ():
                    made = self._span(span, resource, options)
                    if isinstance(made, Rejection):
                        return made
                    events.extend(made)
        return Events(events)

    def _span(self, span: Any, resource: dict[str, Any], options: OtelOptions
              ) -> list[dict[str, Any]] | Rejection:
        if not isinstance(span, dict):
            return []
        attributes = _attributes(span.get("attributes"))
        if not any(key in attributes for _, key in _TYPES):
            return []  # not a GenAI call
        where = f"span {span.get('spanId')}"
        subscriber = attributes.get(options.subscriber_attribute,
                                    resource.get(options.subscriber_attribute))
        stamp = exact_number(span.get("endTimeUnixNano") or span.get("startTimeUnixNano"))
        if not span.get("traceId") or not span.get("spanId"):
            return Rejection(Reason.MISSING_FIELD, "spanId", f"{where}: traceId/spanId missing")
        events = []
        for kind, key in _TYPES:
            raw = attributes.get(key)
            if raw is None:
                continue
            tokens = exact_number(raw)
            if tokens is not None and not in_range(tokens):  # docs/architecture.md §7
                return Rejection(Reason.NUMBER_OUT_OF_RANGE, key,
                                 f"{where}: {out_of_range_message(key, tokens)}")
            if tokens is None or tokens < 0 or tokens != tokens.to_integral_value():
                return Rejection(Reason.INVALID_NUMBER, key, f"{where}: {key} is {raw!r}")
            if tokens == 0:
                continue
            events.append({
                "transaction_id": f"{span['traceId']}:{span['spanId']}:{kind}",
                "external_subscription_id": subscriber,
                "code": options.code,
                "timestamp": None if stamp is None else stamp / Decimal(10**9),
                "properties": {
                    "model": attributes.get("gen_ai.request.model")
                    or attributes.get("gen_ai.response.model"),
                    "provider": attributes.get("gen_ai.provider.name")
                    or attributes.get("gen_ai.system"),
                    "type": kind,
                    "tokens": int(tokens),
                },
            })
        return events


OTEL_GENAI = OtelGenAI()
_FIXTURES = Path(__file__).resolve().parents[1] / "tasks" / "mappings"
OTEL_GENAI.golden = _FIXTURES / "otel_genai.golden.jsonl"
OTEL_GENAI.expected = _FIXTURES / "otel_genai.expected.json"
