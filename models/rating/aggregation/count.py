"""count_agg: every event counts, with or without a field value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from tallyflow.models.rating.aggregation.types import (
    AggregationDefinition,
    AggregationType,
    EventPoint,
    _check_type,
)


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


class Count(AggregationDefinition[CountState]):
    kind = AggregationType.COUNT
    state_type = CountState
    needs_field = False
    pay_in_advance = True
    bill_only_increases = False
    reports_not_a_number = False
    counts_every_event = True

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> CountState:
        return CountState(count, unbillable)

    def counts(self, point: EventPoint) -> bool:
        return True

    def event_value(self, point: EventPoint) -> Decimal | None:
        return Decimal(1)

    def billable_in_advance(self, point: EventPoint) -> bool:
        return True

    def in_advance_units(self, ordered: Sequence[EventPoint], prior: Any = None) -> list[Decimal]:
        return [Decimal(1)] * len(ordered)


COUNT_AGG: Final = Count()
