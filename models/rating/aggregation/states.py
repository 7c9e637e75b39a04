"""Count, sum, max and latest as mergeable states (Lago's *_agg services).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tallyflow.models.lago.times import iso_utc
from tallyflow.models.rating.aggregation.types import (
    ZERO,
    AggregationType,
    EventPoint,
    _check_type,
    _dec,
)
from tallyflow.models.rating.money import WIDE


@dataclass(frozen=True)
class CountState:
    """count_agg: every event counts, with or without a field value."""

    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> CountState:
        return cls()

    def add(self, point: EventPoint) -> CountState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> CountState:
        return CountState(self.events_count + sum(1 for _ in points), self.unbillable_count)

    def merge(self, other: CountState) -> CountState:
        return CountState(
            self.events_count + other.events_count, self.unbillable_count + other.unbillable_count
        )

    def result(self) -> Decimal:
        return Decimal(self.events_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.COUNT.value,
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CountState:
        _check_type(data, AggregationType.COUNT)
        return cls(int(data["events_count"]), int(data["unbillable_count"]))


@dataclass(frozen=True)
class SumState:
    """sum_agg; also carries the sum of ``precise_total_amount_cents`` for the dynamic model.

    ``days`` (ISO local date -> total of that day's values) is kept for points that carry a
    ``day`` (recurring sums): prorated charges weigh each day by the share of the period left
    (``tallyflow.models.rating.aggregation.prorated``). It merges by adding, like ``total``.
    """

    total: Decimal = ZERO
    events_count: int = 0
    unbillable_count: int = 0
    precise_total_amount_cents: Decimal = ZERO
    days: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> SumState:
        return cls()

    def add(self, point: EventPoint) -> SumState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> SumState:
        total, counted, unbillable = self.total, self.events_count, self.unbillable_count
        cents = self.precise_total_amount_cents
        days = dict(self.days)
        for point in points:
            if point.precise_total_amount_cents is not None:
                cents = WIDE.add(cents, point.precise_total_amount_cents)
            if point.value is None:
                unbillable += 1
                continue
            total = WIDE.add(total, point.value)
            counted += 1
            if point.day is not None:
                key = point.day.isoformat()
                days[key] = WIDE.add(days.get(key, ZERO), point.value)
        return SumState(total, counted, unbillable, cents, days)

    def merge(self, other: SumState) -> SumState:
        return SumState(
            WIDE.add(self.total, other.total),
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
            WIDE.add(self.precise_total_amount_cents, other.precise_total_amount_cents),
            merge_days(self.days, other.days),
        )

    def result(self) -> Decimal:
        return self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.SUM.value,
            "total": _dec(self.total),
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
            "precise_total_amount_cents": _dec(self.precise_total_amount_cents),
            **({"days": {d: _dec(v) for d, v in sorted(self.days.items())}} if self.days else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SumState:
        _check_type(data, AggregationType.SUM)
        return cls(
            Decimal(data["total"]),
            int(data["events_count"]),
            int(data["unbillable_count"]),
            Decimal(data.get("precise_total_amount_cents", "0")),
            {d: Decimal(str(v)) for d, v in (data.get("days") or {}).items()},
        )


def merge_days(left: Mapping[str, Decimal], right: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Per-day totals added day by day (what the SQL fold does to ``day_totals``)."""
    out = dict(left)
    for day, value in right.items():
        out[day] = WIDE.add(out.get(day, ZERO), value)
    return out


@dataclass(frozen=True)
class MaxState:
    """max_agg: the largest value seen; 0 when there is none."""

    maximum: Decimal | None = None
    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> MaxState:
        return cls()

    def add(self, point: EventPoint) -> MaxState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> MaxState:
        maximum, counted, unbillable = self.maximum, self.events_count, self.unbillable_count
        for point in points:
            if point.value is None:
                unbillable += 1
                continue
            counted += 1
            maximum = point.value if maximum is None else max(maximum, point.value)
        return MaxState(maximum, counted, unbillable)

    def merge(self, other: MaxState) -> MaxState:
        candidates = [m for m in (self.maximum, other.maximum) if m is not None]
        return MaxState(
            max(candidates) if candidates else None,
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
        )

    def result(self) -> Decimal:
        return ZERO if self.maximum is None else self.maximum

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.MAX.value,
            "maximum": None if self.maximum is None else _dec(self.maximum),
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaxState:
        _check_type(data, AggregationType.MAX)
        maximum = data.get("maximum")
        return cls(
            None if maximum is None else Decimal(maximum),
            int(data["events_count"]),
            int(data["unbillable_count"]),
        )


@dataclass(frozen=True)
class LatestState:
    """latest_agg: the value of the last event by (timestamp, ingestion seq); negative -> 0."""

    value: Decimal | None = None
    timestamp: datetime | None = None
    seq: int | None = None
    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> LatestState:
        return cls()

    def _key(self) -> tuple[datetime, int, Decimal] | None:
        if self.value is None or self.timestamp is None or self.seq is None:
            return None
        return (self.timestamp, self.seq, self.value)

    def add(self, point: EventPoint) -> LatestState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> LatestState:
        best = self
        counted, unbillable = self.events_count, self.unbillable_count
        for point in points:
            if point.value is None:
                unbillable += 1
                continue
            counted += 1
            candidate = LatestState(point.value, point.timestamp, point.seq)
            best = _later(best, candidate)
        return LatestState(best.value, best.timestamp, best.seq, counted, unbillable)

    def merge(self, other: LatestState) -> LatestState:
        best = _later(self, other)
        return LatestState(
            best.value,
            best.timestamp,
            best.seq,
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
        )

    def result(self) -> Decimal:
        if self.value is None or self.value < 0:
            return ZERO
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.LATEST.value,
            "value": None if self.value is None else _dec(self.value),
            "timestamp": None if self.timestamp is None else iso_utc(self.timestamp),
            "seq": self.seq,
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatestState:
        _check_type(data, AggregationType.LATEST)
        value, stamp = data.get("value"), data.get("timestamp")
        return cls(
            None if value is None else Decimal(value),
            None if stamp is None else datetime.fromisoformat(stamp),
            None if data.get("seq") is None else int(data["seq"]),
            int(data["events_count"]),
            int(data["unbillable_count"]),
        )


def _later(left: LatestState, right: LatestState) -> LatestState:
    """The later of two latest states; the value only breaks exact ties so merge commutes."""
    left_key, right_key = left._key(), right._key()
    if right_key is None:
        return left
    if left_key is None or right_key > left_key:
        return right
    return left


