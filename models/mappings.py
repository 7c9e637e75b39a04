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

import re
from collections.abc import Callable, Iterable
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tallyflow.models.events import Reason, Rejection, from_cloudevent
from tallyflow.models.number_rule import in_range, out_of_range_message
from tallyflow.models.rating.money import WIDE, exact_number, plain_text


class Events(tuple[dict[str, Any], ...]):
    """Many events from one record (a plain dict return means exactly one). ``unmapped``: the
    names of usage fields in the record that the mapping does not know (billed: what it
    knows; counted per object and run as ``unmapped_usage_fields``)."""

    unmapped: tuple[str, ...] = ()

    def __new__(cls, events: Iterable[dict[str, Any]] = (),
                unmapped: Iterable[str] = ()) -> Events:
        made = super().__new__(cls, events)
        if unmapped:
            made.unmapped = tuple(unmapped)
        return made


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
    # Events carry ``properties.request_id``, the provider request they bill: ingestion bills
    # each request once across mappings (tasks/ingest/requests.py, docs/llm-usage.md).
    request_identity: bool = False

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
MISSING = _MISSING  # what ``lookup`` gives for a path the record does not have

# One step of a path: a key, a list index (digits), or ``key[field=value]``: the items of the
# list under ``key`` whose ``field`` is ``value`` (what follows applies to each; numbers add up).
_KEY = r"[^.|\[\]=\s]+"
_STEP = re.compile(rf"^{_KEY}(?:\[{_KEY}={_KEY}\])?$")


@dataclass(frozen=True, slots=True)
class _Select:
    key: str
    field: str
    value: str


def path_problem(path: str) -> str | None:
    """Why a path cannot mean anything (checked when the mapping is loaded), or None."""
    if not isinstance(path, str) or not path.strip():
        return "a path must be a non-empty text"
    for alternative in path.split("|"):
        for step in alternative.strip().split("."):
            if not step:
                return f"{path!r}: an empty step (two dots, or a dot at an end)"
            if not _STEP.match(step):
                return (f"{path!r}: {step!r} is not a key, an index or key[field=value]"
                        " (no spaces; . | [ ] = only as syntax)")
    return None


def lookup(record: Any, path: str) -> Any:
    """``a.b.0.c`` into nested objects and lists; ``x|y`` takes the first present; missing or
    null gives ``_MISSING``. ``a[ttl=1h].n`` adds up ``n`` of the items of list ``a`` whose
    ``ttl`` is ``1h`` (missing when none has it); ``a[type=x]`` at the end counts them (uses
    billed per call, such as OpenAI's web search calls)."""
    for alternative in _parts(path):
        value = _walk(record, alternative, 0)
        if value is not _MISSING:
            return value
    return _MISSING


def _walk(value: Any, steps: tuple[str | int | _Select, ...], start: int) -> Any:
    for index in range(start, len(steps)):
        part = steps[index]
        kind = type(value)
        if type(part) is _Select:
            items = value.get(part.key) if kind is dict else None
            if type(items) is not list:
                return _MISSING
            if index + 1 == len(steps):  # ends at the selection: count the items
                count = sum(1 for item in items
                            if type(item) is dict and str(item.get(part.field)) == part.value)
                return count if count else _MISSING
            total: Any = _MISSING
            for item in items:
                if type(item) is dict and str(item.get(part.field)) == part.value:
                    found = _walk(item, steps, index + 1)
                    if found is _MISSING:
                        continue
                    number = exact_number(found)
                    if number is None or isinstance(found, bool):
                        return found  # not a number: the caller rejects it, naming the path
                    total = number if total is _MISSING else total + number
            return total
        if kind is dict:
            value = value.get(part if type(part) is str else str(part), _MISSING)
        elif kind is list and type(part) is int and part < len(value):
            value = value[part]
        else:
            return _MISSING
        if value is _MISSING or value is None:
            return _MISSING
    return value


def _step(text: str) -> str | int | _Select:
    if text.isdigit():
        return int(text)
    if text.endswith("]") and "[" in text:
        key, _, rest = text[:-1].partition("[")
        field, _, value = rest.partition("=")
        return _Select(key, field, value)
    return text


@lru_cache(maxsize=1024)
def _parts(path: str) -> tuple[tuple[str | int | _Select, ...], ...]:
    """A path parsed once: alternatives, each a tuple of steps."""
    return tuple(
        tuple(_step(p) for p in alternative.strip().split("."))
        for alternative in path.split("|")
    )


def field_names(path: str) -> set[str]:
    """The record fields a path reads, as the unknown-field report names them: ``a[k=v].n``
    reads ``a[].n`` and ``a[].k``; list indexes read ``x[]``."""
    names: set[str] = set()
    for alternative in _parts(path):
        prefix = ""
        for part in alternative:
            if type(part) is _Select:
                names.add(f"{prefix}{part.key}[].{part.field}")
                prefix = f"{prefix}{part.key}[]."
            elif type(part) is int:
                prefix = prefix[:-1] + "[]."
            else:
                prefix = f"{prefix}{part}."
        names.add(prefix[:-1])
    return names


class Value(BaseModel):
    """Where a value comes from: a field path, or a constant. ``minus``: paths subtracted (a
    provider that counts cached tokens inside the prompt count is not billed for them twice).
    ``required``: a record without it is rejected (``missing_field``) instead of giving no
    event of that type."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    const: Any = None
    minus: list[str] = Field(default_factory=list)
    prefix: str = ""
    required: bool = False

    @classmethod
    def of(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def model_post_init(self, context: Any) -> None:
        if (self.path is None) == (self.const is None):
            raise ValueError("give exactly one of path or const")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _checked(value) if value is not None else None

    @field_validator("minus")
    @classmethod
    def _minus(cls, value: list[str]) -> list[str]:
        return [_checked(path) for path in value]

    def reads(self) -> set[str]:
        names: set[str] = set()
        for path in ([self.path] if self.path else []) + self.minus:
            names |= field_names(path)
        return names


def _checked(path: str) -> str:
    problem = path_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


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
    request failed. With ``not_in``, refuse it when the value is present and not one of those
    (an HTTP status other than 200). ``{value}`` in the message is the value found."""

    model_config = ConfigDict(extra="forbid")

    when: str
    not_in: list[Any] | None = None
    reason: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str

    _when = field_validator("when")(lambda v: _checked(v))


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (UTC, Europe/Paris, ...)") from None
    return value


class MappingFile(BaseModel):
    """A declarative mapping, as written in its YAML/JSON file.

    ``request_id``: the identity of the provider's request the record reports (for a gateway
    that logs the provider's id, that id); every event of the record carries it as the
    ``request_id`` property, and its transaction ids derive from it (docs/llm-usage.md).
    ``usage``: the provider's usage objects in the record; every field in them must be read by
    a path of the mapping or named under ``ignore`` (with why it is not billed on its own). An
    unknown one is listed (``unmapped_usage_fields``) and the record bills what is known; with
    ``strict: true`` the record is rejected (``unmapped_usage_field``) instead.
    ``timezone``: the zone of timestamps written without one (e.g. LiteLLM's own table)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    description: str = ""
    transaction_id: Value
    request_id: Value | None = None
    external_subscription_id: Value
    code: Value
    timestamp: Value | None = None
    timezone: str | None = None
    properties: dict[str, Value] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)
    each: EachField | None = None
    reject: list[RejectRule] = Field(default_factory=list)
    usage: list[str] = Field(default_factory=list)
    ignore: dict[str, str] = Field(default_factory=dict)
    strict: bool = False
    golden: str | None = Field(None, description="records file, relative to the mapping file")
    expected: str | None = Field(None, description="expected events, relative to the file")

    _coerce = field_validator(
        "transaction_id", "request_id", "external_subscription_id", "code", "timestamp",
        mode="before",
    )(_value)
    _coerce_properties = field_validator("properties", mode="before")(
        lambda v: {k: _value(x) for k, x in v.items()} if isinstance(v, dict) else v
    )
    _timezone = field_validator("timezone")(_zone)
    _usage = field_validator("usage")(lambda v: [_checked(p) for p in v])

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, value: dict[str, str]) -> dict[str, str]:
        for path, why in value.items():
            _checked(path.replace("[]", ""))
            if not str(why).strip():
                raise ValueError(f"{path}: say why it is not billed on its own")
        return value

    def known_fields(self) -> frozenset[str]:
        """Every record field the mapping reads or names as not billed on its own."""
        known: set[str] = set(self.ignore)
        for source in (self.transaction_id, self.request_id, self.external_subscription_id,
                       self.code, self.timestamp, *self.properties.values(),
                       *(self.each.fields.values() if self.each else ())):
            if source is not None:
                known |= source.reads()
        for rule in self.reject:
            known |= field_names(rule.when)
        return frozenset(known)


class DeclarativeOptions(BaseModel):
    """Per-run overrides of a declarative mapping (field paths of the logged record)."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(None, description="Metric code of the events (a constant)")
    transaction_id: str | None = Field(None, description="Path of the record's id")
    external_subscription_id: str | None = Field(
        None, description="Path of the subscriber (e.g. metadata.user_id)"
    )
    timestamp: str | None = Field(None, description="Path of the timestamp")
    timezone: str | None = Field(
        None, description="Zone of timestamps written without one (e.g. UTC)"
    )

    _paths = field_validator("transaction_id", "external_subscription_id", "timestamp")(
        lambda v: None if v is None else _checked(v)
    )
    _timezone = field_validator("timezone")(_zone)


class MappingInvalid(ValueError):
    """A mapping file is wrong; the message names the file and the place in it."""


def describe_errors(where: str, error: ValidationError,
                    place: Callable[[tuple[Any, ...]], str | None] | None = None) -> str:
    problems = []
    for e in error.errors():
        loc = tuple(e["loc"])
        at = place(loc) if place is not None else None
        name = ".".join(str(p) for p in loc) or "(top)"
        message = str(e["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}{f' ({at})' if at else ''}")
    return f"{where}: " + "; ".join(problems)


class DeclarativeMapping(Mapping):
    Options = DeclarativeOptions

    def __init__(self, spec: MappingFile, source: str = "", base: Path | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.source = source  # where it was read from, for messages
        self.known = spec.known_fields()
        self.request_identity = spec.request_id is not None
        if base is not None:
            self.golden = base / spec.golden if spec.golden else None
            self.expected = base / spec.expected if spec.expected else None

    @classmethod
    def from_data(cls, data: Any, where: str, base: Path | None = None,
                  place: Callable[[tuple[Any, ...]], str | None] | None = None
                  ) -> DeclarativeMapping:
        try:
            return cls(MappingFile.model_validate(data), where, base)
        except ValidationError as exc:
            raise MappingInvalid(describe_errors(where, exc, place)) from None

    def _spec(self, options: BaseModel) -> MappingFile:
        given: dict[str, Any] = {}
        if isinstance(options, DeclarativeOptions):
            if options.code is not None:
                given["code"] = Value(const=options.code)
            for name in ("transaction_id", "external_subscription_id", "timestamp"):
                path = getattr(options, name)
                if path is not None:
                    given[name] = Value(path=path)
            if options.timezone is not None:
                given["timezone"] = options.timezone
        return self.spec.model_copy(update=given) if given else self.spec

    def paths(self, options: BaseModel | None = None) -> list[str]:
        """Every path the mapping looks up in a record (for the never-matched report)."""
        spec = self._spec(options) if options is not None else self.spec
        found: list[str] = []
        for source in (spec.transaction_id, spec.request_id, spec.external_subscription_id,
                       spec.timestamp, *spec.properties.values(),
                       *(spec.each.fields.values() if spec.each else ())):
            if source is not None and source.path is not None:
                found.append(source.path)
        return list(dict.fromkeys(found))

    def unmapped(self, record: dict[str, Any]) -> list[str]:
        """Fields inside the provider's usage objects that the mapping neither reads nor
        names: a provider change is seen the day it happens (docs/llm-usage.md)."""
        found: list[str] = []
        for root in self.spec.usage:
            value = lookup(record, root)
            if value is not _MISSING:
                _unknown(value, root, self.known, found)
        return found

    def map(self, record: Any, options: BaseModel) -> MapResult:
        if not isinstance(record, dict):
            return Rejection(Reason.NOT_AN_OBJECT, None,
                             f"a record must be an object, got {type(record).__name__}")
        spec = self._spec(options)
        for rule in spec.reject:
            found = lookup(record, rule.when)
            if found is _MISSING or found is False:
                continue
            if rule.not_in is not None and found in rule.not_in:
                continue
            return Rejection(rule.reason, rule.when,
                             rule.message.replace("{value}", str(found)[:64]))
        unknown = self.unmapped(record) if spec.usage else []
        if unknown and spec.strict:
            return Rejection(UNMAPPED_USAGE_FIELD, unknown[0],
                             f"usage fields this mapping does not know: {', '.join(unknown)} "
                             f"(strict: the record is not billed)")
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
            stamp = _get(record, spec.timestamp, "timestamp", required=spec.timestamp.required)
            if isinstance(stamp, Rejection):
                return stamp
            if stamp is not None:
                base["timestamp"] = _zoned(stamp, spec.timezone)
        properties = dict(spec.constants)
        if spec.request_id is not None:
            request = _get(record, spec.request_id, "request_id", required=False)
            if isinstance(request, Rejection):
                return request
            if request is not None:
                properties["request_id"] = request if isinstance(request, str) else _text(request)
        for key, source in spec.properties.items():
            value = _get(record, source, f"properties.{key}", required=source.required)
            if isinstance(value, Rejection):
                return value
            if value is not None:
                properties[key] = value
        if spec.each is None:
            event = {**base, "properties": properties}
            return Events([event], unknown) if unknown else event
        events = []
        for kind, source in spec.each.fields.items():
            value = _get(record, source, f"each.{kind}", required=source.required)
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
        return Events(events, unknown)


# A record with a usage field its (strict) mapping does not know.
UNMAPPED_USAGE_FIELD = "unmapped_usage_field"


def _unknown(value: Any, where: str, known: frozenset[str], found: list[str]) -> None:
    if where in known:
        return
    if type(value) is dict:
        for key, item in value.items():
            _unknown(item, f"{where}.{key}", known, found)
    elif type(value) is list:
        for item in value:
            if type(item) is dict:
                _unknown(item, f"{where}[]", known, found)
            elif item is not None and f"{where}[]" not in found:
                found.append(f"{where}[]")
    elif value is not None and where not in found:
        found.append(where)


def _zoned(stamp: Any, zone: str | None) -> Any:
    """A timestamp written without a zone, in the mapping's declared zone; anything else as it
    came (validation rejects a zone-less one when no zone is declared)."""
    if zone is None or not isinstance(stamp, str):
        return stamp
    try:
        parsed = datetime.fromisoformat(stamp.strip().replace(" ", "T", 1))
    except ValueError:
        return stamp
    if parsed.tzinfo is not None:
        return stamp
    return parsed.replace(tzinfo=ZoneInfo(zone)).isoformat()


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
