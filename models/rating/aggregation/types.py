"""The aggregation vocabulary and the event point every state folds.

Also the state protocol and the decimal helpers the states share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Context, Decimal
from enum import StrEnum
from typing import Any, Final, Protocol, Self

from tallyflow.models.rating.filters import properties_as_text
from tallyflow.models.rating.money import WIDE, parse_plain_decimal

ZERO: Final = Decimal(0)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# Weighted sums multiply values by epoch seconds with microseconds (16 digits); the default
# 28-digit context would round such products, so their arithmetic runs in a wider one.
_WIDE: Final = Context(prec=80)


_WEIGHTED_PLACES: Final = Decimal("1E-20")  # Lago ceils weighted sums to 20 decimals


class AggregationType(StrEnum):
    COUNT = "count_agg"
    SUM = "sum_agg"
    MAX = "max_agg"
    LATEST = "latest_agg"
    UNIQUE_COUNT = "unique_count_agg"
    WEIGHTED_SUM = "weighted_sum_agg"


class RoundingFunction(StrEnum):
    ROUND = "round"
    CEIL = "ceil"
    FLOOR = "floor"


RECURRING_ALLOWED: Final = frozenset(
    {AggregationType.SUM, AggregationType.UNIQUE_COUNT, AggregationType.WEIGHTED_SUM}
)


def check_recurring(aggregation_type: AggregationType | str, recurring: bool) -> None:
    """Raise ``ValueError`` when a metric asks for ``recurring`` where Lago forbids it."""
    kind = AggregationType(aggregation_type)
    if recurring and kind not in RECURRING_ALLOWED:
        raise ValueError(f"recurring is not allowed for {kind.value}")


@dataclass(frozen=True)
class EventPoint:
    """One event as the aggregations see it.

    ``value`` is the metric field parsed as a plain decimal, ``None`` when missing or not plain
    (then sum/max/latest/weighted_sum do not count it and report it as unbillable). ``text`` is
    the field's text form, which is what unique_count counts. ``seq`` is the ingestion order
    that breaks timestamp ties. ``day`` is the event's local date in the customer's timezone,
    set only where a state keeps per-day detail (recurring sums and unique counts, for
    prorated charges).
    """

    timestamp: datetime
    seq: int
    value: Decimal | None
    properties: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None
    precise_total_amount_cents: Decimal | None = None
    day: date | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("EventPoint.timestamp must be timezone-aware")

    @property
    def order_key(self) -> tuple[datetime, int]:
        return (self.timestamp, self.seq)

    @classmethod
    def from_event(
        cls,
        *,
        timestamp: datetime,
        seq: int,
        properties: Mapping[str, object],
        field_name: str | None,
        precise_total_amount_cents: Decimal | None = None,
    ) -> EventPoint:
        """Build a point from raw event properties (compared and parsed as text)."""
        texts = properties_as_text(properties)
        text = texts.get(field_name) if field_name else None
        return cls(
            timestamp=timestamp,
            seq=seq,
            value=parse_plain_decimal(text),
            properties=texts,
            text=text,
            precise_total_amount_cents=precise_total_amount_cents,
        )


@dataclass(frozen=True)
class TimeWindow:
    """Time span a weighted sum integrates over.

    ``end`` is exclusive (period end + 1 µs) so that a level held for a whole period is worth
    exactly the period; ``length_seconds`` is the full nominal period, which makes a partial
    first or terminated period prorate naturally.
    """

    start: datetime
    end: datetime
    length_seconds: Decimal


def epoch_seconds(moment: datetime) -> Decimal:
    """Exact epoch seconds with microseconds (no float on the way)."""
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (``100`` not ``1E+2``)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1), context=WIDE)
    return value.normalize(WIDE)


class AggregationState(Protocol):
    """What every state offers; the DB layer can treat states uniformly through this."""

    events_count: int
    unbillable_count: int

    def add(self, point: EventPoint) -> Self: ...
    def fold(self, points: Iterable[EventPoint]) -> Self: ...
    def merge(self, other: Self) -> Self: ...
    def to_json(self) -> dict[str, Any]: ...


def _dec(value: Decimal) -> str:
    return format(value, "f")


def _check_type(data: Mapping[str, Any], kind: AggregationType) -> None:
    if data.get("type") != kind.value:
        raise ValueError(f"expected a {kind.value} state, got {data.get('type')!r}")
