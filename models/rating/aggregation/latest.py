"""latest_agg: the value of the last event by (timestamp, ingestion seq)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from tallyflow.models.lago.times import iso_utc
from tallyflow.models.rating.aggregation.types import (
    ZERO,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    _check_type,
    _dec,
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


class Latest(AggregationDefinition[LatestState]):
    kind = AggregationType.LATEST
    state_type = LatestState
    keeps_latest = True

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> LatestState:
        seq = row["latest_seq"]
        return LatestState(
            row["latest_value"],
            row["latest_ts"],
            None if seq is None else int(seq),
            count,
            unbillable,
        )


LATEST_AGG: Final = Latest()
