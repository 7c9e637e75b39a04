"""Record mappings: one source record -> zero, one or many Lago events, or a rejection.

A mapping is a ``Mapping`` object: a name, a description, an ``Options`` model (what a user may
set per run, validated; a mapping without options refuses any) and ``map(record, options)``.
``map`` returns

- a ``dict``: one event (validated afterwards by ``tallyflow.models.events.validate_record``);
- ``Events([...])``: any number of events, zero included; each keeps the record's row number
  plus its position (the sub-index), so ingestion order stays defined;
- a ``Rejection``: the record is refused with the mapping's own reason code and message; the
  stored reject keeps the record's row number and its original text.

``DeclarativeMapping`` reads a mapping written as data (a YAML or JSON file, see
``MappingFile``): field paths, constants and "one event per listed field". Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping as AnyMapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tallyflow.models.events import Reason, Rejection, from_cloudevent
from tallyflow.models.number_rule import in_range, out_of_range_message
from tallyflow.models.rating.money import WIDE, exact_number, plain_text


class Events(tuple[dict[str, Any], ...]):
    """Many events from one record (a plain dict return means exactly one)."""


MapResult = dict[str, Any] | Events | Rejection | Any


class NoOptions(BaseModel):
    """A mapping that takes no options refuses any, by name (never silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class Mapping:
    """Base of every mapping. ``golden``/``expected``: its conformance fixture (records as JSON
    Lines, and the exact events and rejects they give), run by the conformance suite."""

    name: str
    description: str = ""
    Options: type[BaseModel] = NoOptions
    golden: Path | None = None
    expected: Path | None = None

    def options(self, given: AnyMapping[str, Any] | BaseModel | None) -> BaseModel:
        if isinstance(given, BaseModel):
            given = given.model_dump(exclude_none=True)
        return self.Options.model_validate(dict(given or {}))

    def map(self, record: Any, options: BaseModel) -> MapResult:
        raise NotImplementedError


class _Lago(Mapping):
    name = "lago"
    description = "Lago events as they are (transaction_id, external_subscription_id, code, ...)"

    def map(self, record: Any, options: BaseModel) -> MapResult:
        return record


class _CloudEvents(Mapping):
    name = "cloudevents"
    description = (
        "CloudEvents 1.0 (OpenMeter): id, subject, type, time, data -> transaction_id, "
        "external_subscription_id, code, timestamp, properties"
    )

    def map(self, record: Any, options: BaseModel) -> MapResult:
        return from_cloudevent(record)


_GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"
LAGO = _Lago()
CLOUDEVENTS = _CloudEvents()
for _builtin in (LAGO, CLOUDEVENTS):
    _builtin.golden = _GOLDEN / f"{_builtin.name}.jsonl"
    _builtin.expected = _GOLDEN / f"{_builtin.name}.expected.json"


# --------------------------------------------------------------------------------------------
# Declarative mappings
# --------------------------------------------------------------------------------------------

_MISSING = object()


def lookup(record: Any, path: str) -> Any:
    """``a.b.0.c`` into nested objects and lists; ``x|y`` takes the first present; missing or
    null gives ``_MISSING``."""
    for alternative in _parts(path):
        value = record
        for part in alternative:
            kind = type(value)
            if kind is dict:
                value = value.get(part if type(part) is str else str(part), _MISSING)
            elif kind is list and type(part) is int and part < len(value):
                value = value[part]
            else:
                value = _MISSING
            if value is _MISSING or value is None:
                value = _MISSING
                break
        if value is not _MISSING:
            return value
    return _MISSING


@lru_cache(maxsize=1024)
def _parts(path: str) -> tuple[tuple[str | int, ...], ...]:
    """A path parsed once: alternatives, each a tuple of keys (digits index lists)."""
    return tuple(
        tuple(int(p) if p.isdigit() else p for p in alternative.strip().split("."))
        for alternative in path.split("|")
    )


class Value(BaseModel):
    """Where a value comes from: a field path, or a constant. ``minus``: paths subtracted (a
    provider that counts cached tokens inside the prompt count is not billed for them twice)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    const: Any = None
    minus: list[str] = Field(default_factory=list)
    prefix: str = ""

    @classmethod
    def of(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def model_post_init(self, context: Any) -> None:
        if (self.path is None) == (self.const is None):
            raise ValueError("give exactly one of path or const")


def _value(value: Any) -> Any:
    return Value.of(value)


class EachField(BaseModel):
    """One event per listed field (token types): the field's value goes to ``property``, its
    name to ``type_property``; a field absent (or zero, with ``skip_zero``) gives no event."""

    model_config = ConfigDict(extra="forbid")

    property: str = "tokens"
    type_property: str = "type"
    skip_zero: bool = True
    fields: dict[str, Value] = Field(min_length=1)

    _coerce = field_validator("fields", mode="before")(
        lambda v: {k: _value(x) for k, x in v.items()} if isinstance(v, dict) else v
    )


class RejectRule(BaseModel):
    """Refuse a record when the path is present (not null, not false): e.g. a batch line whose
    request failed. The record is kept as a reject with this reason and message."""

    model_config = ConfigDict(extra="forbid")

    when: str
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str


class MappingFile(BaseModel):
    """A declarative mapping, as written in its YAML/JSON file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    description: str = ""
    transaction_id: Value
    external_subscription_id: Value
    code: Value
    timestamp: Value | None = None
    properties: dict[str, Value] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)
    each: EachField | None = None
    reject: list[RejectRule] = Field(default_factory=list)
    golden: str | None = Field(None, description="records file, relative to the mapping file")
    expected: str | None = Field(None, description="expected events, relative to the file")

    _coerce = field_validator(
        "transaction_id", "external_subscription_id", "code", "timestamp", mode="before"
    )(_value)
    _coerce_properties = field_validator("properties", mode="before")(
        lambda v: {k: _value(x) for k, x in v.items()} if isinstance(v, dict) else v
    )


class DeclarativeOptions(BaseModel):
    """Per-run overrides of a declarative mapping (field paths of the logged record)."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(None, description="Metric code of the events (a constant)")
    transaction_id: str | None = Field(None, description="Path of the record's id")
    external_subscription_id: str | None = Field(
        None, description="Path of the subscriber (e.g. metadata.user_id)"
    )
    timestamp: str | None = Field(None, description="Path of the timestamp")


class MappingInvalid(ValueError):
    """A mapping file is wrong; the message names the file and the place in it."""


def describe_errors(where: str, error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
    ]
    return f"{where}: " + "; ".join(problems)


class DeclarativeMapping(Mapping):
    Options = DeclarativeOptions

    def __init__(self, spec: MappingFile, source: str = "", base: Path | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.source = source  # where it was read from, for messages
        if base is not None:
            self.golden = base / spec.golden if spec.golden else None
            self.expected = base / spec.expected if spec.expected else None

    @classmethod
    def from_data(cls, data: Any, where: str, base: Path | None = None) -> DeclarativeMapping:
        try:
            return cls(MappingFile.model_validate(data), where, base)
        except ValidationError as exc:
            raise MappingInvalid(describe_errors(where, exc)) from None

    def _spec(self, options: BaseModel) -> MappingFile:
        given: dict[str, Any] = {}
        if isinstance(options, DeclarativeOptions):
            if options.code is not None:
                given["code"] = Value(const=options.code)
            for name in ("transaction_id", "external_subscription_id", "timestamp"):
                path = getattr(options, name)
                if path is not None:
                    given[name] = Value(path=path)
        return self.spec.model_copy(update=given) if given else self.spec

    def map(self, record: Any, options: BaseModel) -> MapResult:
        if not isinstance(record, dict):
            return Rejection(Reason.NOT_AN_OBJECT, None,
                             f"a record must be an object, got {type(record).__name__}")
        spec = self._spec(options)
        for rule in spec.reject:
            found = lookup(record, rule.when)
            if found is not _MISSING and found is not False:
                return Rejection(rule.reason, rule.when, rule.message)
        base: dict[str, Any] = {}
        for name in ("transaction_id", "external_subscription_id", "code"):
            value = _get(record, getattr(spec, name), name)
            if isinstance(value, Rejection):
                return value
            base[name] = value if isinstance(value, str) else _text(value)
        if spec.each is not None and not (
            isinstance(base["transaction_id"], str) and base["transaction_id"].strip()
        ):
            # derived ids must come from a real one: ":input" would merge unrelated records
            where = spec.transaction_id.path
            return Rejection(Reason.EMPTY_VALUE, where,
                             f"transaction_id: {where} is empty or not a string")
        if spec.timestamp is not None:
            stamp = _get(record, spec.timestamp, "timestamp", required=False)
            if isinstance(stamp, Rejection):
                return stamp
            if stamp is not None:
                base["timestamp"] = stamp
        properties = dict(spec.constants)
        for key, source in spec.properties.items():
            value = _get(record, source, f"properties.{key}", required=False)
            if isinstance(value, Rejection):
                return value
            if value is not None:
                properties[key] = value
        if spec.each is None:
            return {**base, "properties": properties}
        events = []
        for kind, source in spec.each.fields.items():
            value = _get(record, source, f"each.{kind}", required=False)
            if isinstance(value, Rejection):
                return value
            if value is None:
                continue
            number = exact_number(value)
            if number is None or isinstance(value, bool):
                return Rejection(Reason.INVALID_NUMBER, source.path,
                                 f"{source.path} is {str(value)[:64]!r}, not a number")
            if not in_range(number):
                return _out_of_range(source.path, number)
            if number < 0:
                return Rejection(Reason.INVALID_NUMBER, source.path,
                                 f"{kind}: {source.path} gives {plain_text(number)} (< 0)")
            if number == 0 and spec.each.skip_zero:
                continue
            events.append({
                **base,
                "transaction_id": f"{base['transaction_id']}:{kind}",
                "properties": {**properties, spec.each.type_property: kind,
                               spec.each.property: _number(number)},
            })
        return Events(events)


def _out_of_range(path: str | None, number: Decimal) -> Rejection:
    """A source field beyond the number rule (docs/architecture.md §7), refused by its own
    path: the event it would make is refused anyway, but the record's field is what to fix."""
    return Rejection(Reason.NUMBER_OUT_OF_RANGE, path, out_of_range_message(str(path), number))


def _text(value: Any) -> Any:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return plain_text(Decimal(value))
    return value  # wrong types are rejected by validation, naming the event field


def _number(value: Decimal) -> int | Decimal:
    return int(value) if value == value.to_integral_value() else value


def _get(record: dict[str, Any], source: Value, name: str, required: bool = True) -> Any:
    if source.const is not None:
        return source.prefix + source.const if source.prefix else source.const
    assert source.path is not None
    value = lookup(record, source.path)
    if value is _MISSING:
        if required:
            return Rejection(Reason.MISSING_FIELD, source.path,
                             f"{name}: {source.path} is missing in the record")
        return None
    if source.minus:
        number = exact_number(value)
        if number is None or isinstance(value, bool):
            return Rejection(Reason.INVALID_NUMBER, source.path,
                             f"{source.path} is {str(value)[:64]!r}, not a number")
        if not in_range(number):
            return _out_of_range(source.path, number)
        for path in source.minus:
            other = lookup(record, path)
            if other is _MISSING:
                continue
            less = exact_number(other)
            if less is None or isinstance(other, bool):
                return Rejection(Reason.INVALID_NUMBER, path,
                                 f"{path} is {str(other)[:64]!r}, not a number")
            if not in_range(less):
                return _out_of_range(path, less)
            # WIDE: the default context keeps 28 digits, fewer than the bound's 51
            number = WIDE.subtract(number, less)
        return number
    if source.prefix:
        return source.prefix + (value if isinstance(value, str) else str(value))
    return value

