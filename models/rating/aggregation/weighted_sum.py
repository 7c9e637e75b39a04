"""weighted_sum_agg: values held over time, weighted by seconds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any, Final

from tallyflow.models.rating.aggregation.types import (
    _WEIGHTED_PLACES,
    _WIDE,
    ZERO,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    TimeWindow,
    _check_type,
    _dec,
    epoch_seconds,
    tidy,
)


@dataclass(frozen=True)
class WeightedSumState:
    """weighted_sum_agg in an order-independent form.

    Each event adds its value to a level at its timestamp; the result is the time-weighted
    average level over the window. With ``variation = Σv`` and ``moment = Σ v·t`` (t in epoch
    seconds) the integral is ``initial·(E-S) + E·variation - moment`` for a window [S, E), so
    two sums are the whole state and merging adds them. ``initial_level`` is not stored: for a
    recurring metric it is the sum of the variations of all earlier periods (see
    :meth:`end_level`), which the DB layer computes from those periods' states, so a late
    event in an old period flows forward without rewriting later states.
    """

    variation: Decimal = ZERO
    moment: Decimal = ZERO
    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> WeightedSumState:
        return cls()

    def add(self, point: EventPoint) -> WeightedSumState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> WeightedSumState:
        variation, moment = self.variation, self.moment
        counted, unbillable = self.events_count, self.unbillable_count
        with localcontext(_WIDE):
            for point in points:
                if point.value is None:
                    unbillable += 1
                    continue
                counted += 1
                variation += point.value
                moment += point.value * epoch_seconds(point.timestamp)
        return WeightedSumState(variation, moment, counted, unbillable)

    def merge(self, other: WeightedSumState) -> WeightedSumState:
        with localcontext(_WIDE):
            return WeightedSumState(
                self.variation + other.variation,
                self.moment + other.moment,
                self.events_count + other.events_count,
                self.unbillable_count + other.unbillable_count,
            )

    def end_level(self, initial_level: Decimal = ZERO) -> Decimal:
        """Level after the last event: the next period's initial level when recurring."""
        return initial_level + self.variation

    def result(self, window: TimeWindow, initial_level: Decimal = ZERO) -> Decimal:
        """Time-weighted level over ``window``; the current level is projected to its end.

        Every folded event must lie inside the window (the DB layer keys state by period).
        """
        if window.length_seconds <= 0:
            raise ValueError("weighted_sum needs a window of positive length")
        with localcontext(_WIDE) as ctx:
            start, end = epoch_seconds(window.start), epoch_seconds(window.end)
            area = initial_level * (end - start) + end * self.variation - self.moment
            ctx.rounding = ROUND_CEILING
            return tidy((area / window.length_seconds).quantize(_WEIGHTED_PLACES))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.WEIGHTED_SUM.value,
            "variation": _dec(self.variation),
            "moment": _dec(self.moment),
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WeightedSumState:
        _check_type(data, AggregationType.WEIGHTED_SUM)
        return cls(
            Decimal(data["variation"]),
            Decimal(data["moment"]),
            int(data["events_count"]),
            int(data["unbillable_count"]),
        )


class WeightedSum(AggregationDefinition[WeightedSumState]):
    kind = AggregationType.WEIGHTED_SUM
    state_type = WeightedSumState
    recurring_allowed = True
    carries_level = True
    needs_window = True

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> WeightedSumState:
        return WeightedSumState(row["total"], row["moment"], count, unbillable)

    def units(
        self, state: WeightedSumState, window: TimeWindow | None, initial_level: Decimal
    ) -> Decimal:
        if window is None:
            raise ValueError("weighted_sum_agg needs the period window")
        return state.result(window, initial_level)

    def level(self, state: WeightedSumState) -> Decimal:
        return state.end_level()


WEIGHTED_SUM_AGG: Final = WeightedSum()
