"""max_agg: the largest value seen; 0 when there is none."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from tallyflow.models.rating.aggregation.types import (
    ZERO,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    _check_type,
    _dec,
)


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


class Max(AggregationDefinition[MaxState]):
    kind = AggregationType.MAX
    state_type = MaxState

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> MaxState:
        return MaxState(row["maximum"], count, unbillable)


MAX_AGG: Final = Max()
