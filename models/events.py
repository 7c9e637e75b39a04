"""Usage events: what a valid event is, and why a record is not one.

Pure and per-record on purpose: every reader (JSON Lines, JSON, CSV, Parquet, any new source)
funnels records through ``validate_record`` so a rule is stated once and every rejection carries
the same machine-readable reason codes. It is the hot path of ingestion, so it works on plain
dicts and tuples rather than pydantic models (pydantic per event costs far more, docs/scaling.md
§6).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import orjson

from tallyflow.models.number_rule import in_range, numbers_out_of_range, out_of_range_message
from tallyflow.models.rating.money import exact_number, is_plain_decimal, plain_text

MAX_ID_LENGTH = 255
MAX_PROPERTIES_BYTES = 64 * 1024
MAX_RECORD_BYTES = 256 * 1024
MAX_RAW_KEPT = 16 * 1024
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE = timedelta(days=1)

# \u0000 preceded by an even number of backslashes: an escaped NUL, not an escaped backslash.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_REQUIRED_TEXT = ("transaction_id", "external_subscription_id", "code")


class Reason(StrEnum):
    """Machine-readable reasons a row was rejected; stable, because people filter on them."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_VALUE = "empty_value"
    TOO_LONG = "too_long"
    NUL_CHARACTER = "nul_character"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_WITHOUT_ZONE = "timestamp_without_zone"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    INVALID_NUMBER = "invalid_number"
    # A number outside the one bound on billing numbers (models/number_rule.py; docs/architecture.md
    # §7): in properties anywhere, or in precise_total_amount_cents.
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    PROPERTIES_TOO_LARGE = "properties_too_large"
    RECORD_TOO_LARGE = "record_too_large"
    COLUMN_COUNT = "column_count"
    # The event's key (external_subscription_id, transaction_id) is already stored with other
    # content: the stored copy is kept, this one is kept out and reported (never billed).
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    # Before the archive horizon (``tallyflow archive``): that history left PostgreSQL with
    # final invoices, so the event can be neither deduplicated against it nor billed.
    ARCHIVED_PERIOD = "archived_period"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason | str  # a mapping may refuse a record with its own code
    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Accepted timestamp range and the default for events without one.

    Bounds are relative to the object's write time, never to "now", so re-reading an old object
    gives the same verdicts (docs/architecture.md §3, invariant 5).
    """

    written_at: datetime
    max_future: timedelta = DEFAULT_MAX_FUTURE
    archived_before: datetime | None = None
    """The archive horizon: the one bound that is not the object's own. It only moves
    forward, and only over periods whose invoices are final (models/archive.py)."""
    latest: datetime = field(init=False)
    latest_epoch: int = field(init=False)  # for the fast path's integer comparison
    lowest_epoch: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        latest = self.written_at + self.max_future
        object.__setattr__(self, "latest", latest)
        object.__setattr__(self, "latest_epoch", (latest - EPOCH) // timedelta(seconds=1))
        if self.archived_before is not None:  # ceil: a whole second at the horizon is safe
            seconds = -((EPOCH - self.archived_before) // timedelta(seconds=1))
            object.__setattr__(self, "lowest_epoch", max(0, seconds))


# (transaction_id, external_subscription_id, code, timestamp, properties_json, precise_cents)
ValidEvent = tuple[str, str, str, datetime, str, Decimal | None]


def _text_field(record: Mapping[str, Any], name: str) -> str | Rejection:
    value = record.get(name)
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value:
        if value.strip():
            return value  # the common case, decided in one line
    if value is None:
        return Rejection(Reason.MISSING_FIELD, name, f"{name} is required")
    if not isinstance(value, str):
        return Rejection(
            Reason.WRONG_TYPE, name, f"{name} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        return Rejection(Reason.EMPTY_VALUE, name, f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        return Rejection(
            Reason.TOO_LONG,
            name,
            f"{name} is {len(value)} characters; the limit is {MAX_ID_LENGTH}",
        )
    if "\x00" in value:
        return Rejection(Reason.NUL_CHARACTER, name, f"{name} contains a NUL character")
    return value


def _epoch_to_datetime(seconds: Decimal) -> datetime:
    if seconds.is_nan():
        raise ValueError("NaN is no time")
    if seconds.is_infinite() or seconds.adjusted() > _MAX_EPOCH_DIGITS:
        # decided before int(): 1e999999999 is valid JSON, and its integer has a billion digits
        raise OverflowError("timestamp too far from 1970")
    whole = int(seconds)
    micros = int(((seconds - whole) * 1_000_000).to_integral_value())
    return EPOCH + timedelta(seconds=whole, microseconds=micros)


# Beyond this many digits epoch seconds are out of datetime's range whatever follows.
_MAX_EPOCH_DIGITS = 18


def parse_timestamp(value: Any, bounds: TimeBounds) -> datetime | Rejection:
    """Epoch seconds (int, float or numeric string) or ISO-8601 with an offset.

    A timestamp without a zone is rejected rather than guessed: guessing UTC silently moves
    usage across billing periods for customers in other timezones.
    """
    if value is None:
        return bounds.written_at
    if isinstance(value, bool):
        return Rejection(Reason.WRONG_TYPE, "timestamp", "timestamp must be a number or a string")
    try:
        if isinstance(value, int):
            parsed = EPOCH + timedelta(seconds=value)
        elif isinstance(value, float | Decimal):
            parsed = _epoch_to_datetime(Decimal(str(value)))
        elif isinstance(value, datetime):
            if value.tzinfo is None:
                return Rejection(
                    Reason.TIMESTAMP_WITHOUT_ZONE, "timestamp", "timestamp has no timezone"
                )
            parsed = value
        elif isinstance(value, str):
            text = value.strip()
            if is_plain_decimal(text):
                parsed = _epoch_to_datetime(Decimal(text))
            else:
                candidate = datetime.fromisoformat(text)
                if candidate.tzinfo is None:
                    return Rejection(
                        Reason.TIMESTAMP_WITHOUT_ZONE,
                        "timestamp",
                        f"timestamp {value[:64]!r} has no timezone offset (add Z or +00:00)",
                    )
                parsed = candidate
        else:
            return Rejection(
                Reason.WRONG_TYPE,
                "timestamp",
                f"timestamp must be a number or a string, got {type(value).__name__}",
            )
        # Inside the try: an offset can push a valid local time (0001-01-01T00:00+01:00) past
        # what datetime can hold, which must reject the row, not fail the object.
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        # A well-formed value too far from 1970 for datetime (1e30, -1e12, 9999-12-31T23:59-01:00)
        return Rejection(
            Reason.TIMESTAMP_OUT_OF_RANGE,
            "timestamp",
            f"timestamp {str(value)[:64]!r} is outside 1970-01-01 .. {bounds.latest.isoformat()}",
        )
    except (ValueError, InvalidOperation):
        return Rejection(
            Reason.INVALID_TIMESTAMP,
            "timestamp",
            f"timestamp {str(value)[:64]!r} is neither epoch seconds nor ISO-8601",
        )
    if parsed < EPOCH or parsed > bounds.latest:
        return Rejection(
            Reason.TIMESTAMP_OUT_OF_RANGE,
            "timestamp",
            f"timestamp {parsed.isoformat()} is outside 1970-01-01 .. {bounds.latest.isoformat()}",
        )
    if bounds.archived_before is not None and parsed < bounds.archived_before:
        return Rejection(
            Reason.ARCHIVED_PERIOD,
            "timestamp",
            f"timestamp {parsed.isoformat()} is before {bounds.archived_before.isoformat()}, "
            "where history is archived (tallyflow archive) and invoices are final",
        )
    return parsed


def _properties(value: Any) -> str | Rejection:
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        return Rejection(
            Reason.WRONG_TYPE,
            "properties",
            f"properties must be an object, got {type(value).__name__}",
        )
    for path, number in numbers_out_of_range(value, "properties"):
        # The first one only: one reason per row, and its field names where it is.
        return Rejection(Reason.NUMBER_OUT_OF_RANGE, path, out_of_range_message(path, number))
    try:
        encoded = orjson.dumps(value, default=_json_default)
    except (TypeError, orjson.JSONEncodeError):
        # orjson refuses integers beyond 64 bits (before calling ``default``); loads_exact keeps
        # them as exact ints, so hand them over as Decimals, which ``default`` writes verbatim.
        try:
            encoded = orjson.dumps(_big_ints_as_decimals(value), default=_json_default)
        except (TypeError, orjson.JSONEncodeError, RecursionError) as exc:
            return Rejection(Reason.WRONG_TYPE, "properties", f"properties are not JSON: {exc}")
    if len(encoded) > MAX_PROPERTIES_BYTES:
        return Rejection(
            Reason.PROPERTIES_TOO_LARGE,
            "properties",
            f"properties are {len(encoded)} bytes; the limit is {MAX_PROPERTIES_BYTES}",
        )
    if has_nul_escape(encoded):
        # PostgreSQL jsonb cannot store U+0000; reject the row instead of failing the object.
        return Rejection(Reason.NUL_CHARACTER, "properties", "properties contain a NUL character")
    return encoded.decode()


def has_nul_escape(encoded: bytes) -> bool:
    """Whether JSON text holds an escaped U+0000, not merely the six characters ``\\u0000``.

    The substring test alone (all the fast path needs: it only decides whether to look closer)
    also matches an escaped backslash followed by ``u0000``, i.e. the text ``\\u0000`` in a
    value, which is perfectly storable.
    """
    return b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded) is not None


_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1


def _big_ints_as_decimals(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        return value if _I64_MIN <= value <= _U64_MAX else Decimal(value)
    if kind is dict:
        return {key: _big_ints_as_decimals(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_big_ints_as_decimals(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _precise_cents(value: Any) -> Decimal | None | Rejection:
    """One rule for every format: a JSON number is read from its literal text (readers parse
    with Decimal), so 0.1, 1e-05 and 1E+3 are the exact numbers written; a float from a typed
    format goes through its shortest round-trip text (``money.float_to_decimal``); a string
    must be a plain decimal, as Lago reads property text. Stored in positional form, inside the
    number rule's bound (models/number_rule.py), as every other billing number."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isnan(value) and math.isinf(value):
        number: Decimal | None = Decimal(value)  # beyond any bound, so said (not "not a number")
    else:
        number = exact_number(value.strip() if isinstance(value, str) else value)
    if number is None:
        return Rejection(
            Reason.INVALID_NUMBER,
            "precise_total_amount_cents",
            f"precise_total_amount_cents {str(value)[:64]!r} is not a plain decimal",
        )
    if not in_range(number):
        return Rejection(
            Reason.NUMBER_OUT_OF_RANGE,
            "precise_total_amount_cents",
            out_of_range_message("precise_total_amount_cents", number),
        )
    return Decimal(plain_text(number))


def validate_record(record: Any, bounds: TimeBounds) -> ValidEvent | Rejection:
    """Turn one decoded record into a loadable event or the first reason it cannot be one.

    The first block accepts the overwhelmingly common shape (three short strings, integer epoch
    seconds, a flat properties object) in one pass; anything else takes the careful path below,
    which accepts a superset of it and says exactly why a record is refused. A property test
    checks that both paths agree.
    """
    if type(record) is dict:
        txn = record.get("transaction_id")
        sub = record.get("external_subscription_id")
        code = record.get("code")
        stamp = record.get("timestamp")
        properties = record.get("properties")
        if (
            type(txn) is str
            and type(sub) is str
            and type(code) is str
            and type(stamp) is int
            and type(properties) is dict
            and record.get("precise_total_amount_cents") is None
            and 0 < len(txn) <= MAX_ID_LENGTH
            and 0 < len(sub) <= MAX_ID_LENGTH
            and 0 < len(code) <= MAX_ID_LENGTH
            and bounds.lowest_epoch <= stamp <= bounds.latest_epoch
            and "\x00" not in txn
            and "\x00" not in sub
            and "\x00" not in code
            and txn.strip()
            and sub.strip()
            and code.strip()
        ):
            try:
                encoded = orjson.dumps(properties)
            except (TypeError, orjson.JSONEncodeError):
                encoded = b""
            if (0 < len(encoded) <= MAX_PROPERTIES_BYTES and b"\\u0000" not in encoded
                    and not _holds_float(properties)):
                # fromtimestamp: the same instant as EPOCH + timedelta(seconds=stamp) (0 <=
                # stamp, checked above) in half the time, which counts at one call per event
                return (txn, sub, code, datetime.fromtimestamp(stamp, UTC), encoded.decode(),
                        None)
    return _validate_carefully(record, bounds)


def _holds_float(properties: dict[str, Any]) -> bool:
    """Whether a binary float is among the properties (only a plugin mapping makes one:
    readers give Decimals), for the careful path to hold it to the number rule: orjson would
    write 1e300 as it is and NaN as null. The usual flat object of strings and integers
    (always inside the rule: orjson writes no integer beyond 64 bits) is decided in one loop."""
    for item in properties.values():
        kind = type(item)
        if kind is not str and kind is not int:
            return _has_float(properties)
    return False


def _has_float(value: Any) -> bool:
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list or kind is tuple) and _has_float(item)):
            return True
    return False


def _validate_carefully(record: Any, bounds: TimeBounds) -> ValidEvent | Rejection:
    if not isinstance(record, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, None, f"an event must be an object, got {type(record).__name__}"
        )
    texts: list[str] = []
    for name in _REQUIRED_TEXT:
        checked = _text_field(record, name)
        if isinstance(checked, Rejection):
            return checked
        texts.append(checked)
    timestamp = parse_timestamp(record.get("timestamp"), bounds)
    if isinstance(timestamp, Rejection):
        return timestamp
    properties = _properties(record.get("properties"))
    if isinstance(properties, Rejection):
        return properties
    precise = _precise_cents(record.get("precise_total_amount_cents"))
    if isinstance(precise, Rejection):
        return precise
    return (texts[0], texts[1], texts[2], timestamp, properties, precise)


def _by_value(value: Any) -> Any:
    """A property value as duplicates are compared: a number and a plain decimal string are
    the same number (``"100"`` from a CSV, ``100`` and ``100.0`` from JSON, as the aggregations
    read them); anything else is itself, a boolean never a number."""
    kind = type(value)
    if kind is dict:
        return {key: _by_value(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_by_value(item) for item in value]
    if kind is bool or value is None:
        return (kind.__name__, value)
    number = exact_number(value)
    if number is not None:
        return ("number", number)
    return ("text", value) if kind is str else (kind.__name__, value)


def differing_properties(kept: Mapping[str, Any], copy: Mapping[str, Any]) -> list[str]:
    """The property names whose values differ between the stored copy of an event and a later
    one, comparing numbers by value (docs/architecture.md §7): none means a plain duplicate."""
    return [key for key in (*kept, *(k for k in copy if k not in kept))
            if key not in kept or key not in copy
            or _by_value(kept[key]) != _by_value(copy[key])]


def quoted_value(value: Any) -> str:
    """A property value as a conflict's message shows it: JSON, cut short."""
    try:
        text = orjson.dumps(value, default=_json_default).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def from_cloudevent(record: Any) -> Any:
    """Map a CloudEvents 1.0 record (OpenMeter's shape) onto Lago's event fields.

    id -> transaction_id, subject -> external_subscription_id, type -> code, time -> timestamp,
    data -> properties. Anything that is not an object passes through to be rejected as such.
    """
    if not isinstance(record, dict):
        return record
    return {
        "transaction_id": record.get("id"),
        "external_subscription_id": record.get("subject"),
        "code": record.get("type"),
        "timestamp": record.get("time"),
        "properties": record.get("data"),
    }

