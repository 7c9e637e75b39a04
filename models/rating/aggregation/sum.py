"""sum_agg: the total of the values; recurring, prorated per local day (Lago's
``ProratedAggregations::SumService``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any, Final

from tallyflow.models.rating.aggregation.types import (
    _WIDE,
    ZERO,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    ProratedUnits,
    ProrationWindow,
    _check_type,
    _dec,
)
from tallyflow.models.rating.money import WIDE

_PLACES: Final = Decimal("1E-5")  # Lago ceils prorated aggregations to 5 decimals


@dataclass(frozen=True)
class SumState:
    """sum_agg; also carries the sum of ``precise_total_amount_cents`` for the dynamic model.

    ``days`` (ISO local date -> total of that day's values) is kept for points that carry a
    ``day`` (recurring sums): prorated charges weigh each day by the share of the period left
    (:func:`prorate_sum` below). It merges by adding, like ``total``.
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


def prorate_sum(state: SumState, window: ProrationWindow) -> ProratedUnits:
    """The prorated units of a recurring sum's merged state (this period and earlier ones).

    Every unit not on a day of this period's charged span is carried: it counts
    ``window.covered`` (Lago's persisted sum). Lago lists the carried units as the first
    per-event entry only when positive; the prorated total counts them either way.
    """
    with localcontext(_WIDE):
        in_period = sorted(
            (date.fromisoformat(day), value)
            for day, value in state.days.items()
            if window.start.isoformat() <= day <= window.last.isoformat()
        )
        carried = state.total - sum((value for _, value in in_period), ZERO)
        entries: list[tuple[Decimal, Decimal]] = []
        if carried > 0:
            entries.append((carried, carried * window.covered))
        prorated = carried * window.covered
        for day, value in in_period:
            weighed = value * window.weight(day)
            entries.append((value, weighed))
            prorated += weighed
        prorated = prorated.quantize(_PLACES, rounding=ROUND_CEILING)
    return ProratedUnits(state.total, prorated, tuple(entries))


class Sum(AggregationDefinition[SumState]):
    kind = AggregationType.SUM
    state_type = SumState
    recurring_allowed = True
    carries_states = True
    prorates = True
    pay_in_advance = True

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> SumState:
        """``day_totals`` arrives as jsonb text or already decoded, decimals kept exact."""
        days = row.get("day_totals") or {}
        return SumState(
            row["total"],
            count,
            unbillable,
            row["precise_total"],
            {d: Decimal(str(v)) for d, v in days.items()},
        )

    def precise_total_amount_cents(self, state: SumState) -> Decimal:
        return state.precise_total_amount_cents

    def prorate(self, state: SumState, window: ProrationWindow) -> ProratedUnits:
        return prorate_sum(state, window)

    def in_advance_units(self, ordered: Sequence[EventPoint], prior: Any = None) -> list[Decimal]:
        return [p.value if p.value is not None else ZERO for p in ordered]


SUM_AGG: Final = Sum()
