"""unique_count_agg: per value, the latest add or remove; recurring, prorated by the days each
value was active (Lago's ``ProratedAggregations::UniqueCountService``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import ROUND_CEILING, Decimal, localcontext
from enum import StrEnum
from typing import Any, Final

from tallyflow.models.lago.times import iso_utc
from tallyflow.models.rating.aggregation.types import (
    _WIDE,
    ZERO,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    ProratedUnits,
    ProrationWindow,
    _check_type,
)

_PLACES: Final = Decimal("1E-5")  # Lago ceils prorated aggregations to 5 decimals


class Operation(StrEnum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class UniqueOp:
    """The last known operation on one distinct value."""

    timestamp: datetime
    seq: int
    operation: Operation

    def key(self) -> tuple[datetime, int, str]:
        return (self.timestamp, self.seq, self.operation.value)


@dataclass(frozen=True)
class DayOps:
    """One value's operations on one local day, as much as prorating needs: the day's first
    add, whether it removes, and its last operation (``prorate_unique`` rebuilds Lago's
    per-day add/remove intervals from these; merging is per field, so folds stay exact)."""

    first_add: UniqueOp | None
    has_remove: bool
    last: UniqueOp

    @classmethod
    def of(cls, op: UniqueOp) -> DayOps:
        return cls(op if op.operation is Operation.ADD else None,
                   op.operation is Operation.REMOVE, op)

    def merge(self, other: DayOps) -> DayOps:
        adds = [a for a in (self.first_add, other.first_add) if a is not None]
        return DayOps(
            min(adds, key=UniqueOp.key) if adds else None,
            self.has_remove or other.has_remove,
            max(self.last, other.last, key=UniqueOp.key),
        )

    def to_json(self) -> list[Any]:
        first = self.first_add
        return [None if first is None else iso_utc(first.timestamp),
                None if first is None else first.seq, self.has_remove,
                iso_utc(self.last.timestamp), self.last.seq, self.last.operation.value]

    @classmethod
    def from_json(cls, data: list[Any]) -> DayOps:
        add_ts, add_seq, has_remove, last_ts, last_seq, last_op = data
        first = (None if add_ts is None
                 else UniqueOp(datetime.fromisoformat(add_ts), int(add_seq), Operation.ADD))
        last = UniqueOp(datetime.fromisoformat(last_ts), int(last_seq), Operation(last_op))
        return cls(first, bool(has_remove), last)


DaysByValue = Mapping[str, Mapping[str, DayOps]]
"""distinct value -> ISO local date -> that day's operations."""


@dataclass(frozen=True)
class UniqueCountState:
    """unique_count_agg, stored as the last operation per distinct value.

    Lago scores each value's operations in time order: an operation equal to the previous one
    adds 0, otherwise add +1 / remove -1, starting from "removed". Those scores telescope to 1
    when the value's last operation is ``add`` and 0 otherwise, so keeping only the last
    operation (by timestamp, then seq) per value is exact, and merging is a per-value max.
    The state grows with the number of distinct values, not with the number of events.

    ``days`` is kept for points that carry a ``day`` (recurring unique counts, which prorated
    charges weigh by the days each value was active): one :class:`DayOps` per value and day.
    """

    last_ops: Mapping[str, UniqueOp] = field(default_factory=dict)
    events_count: int = 0
    unbillable_count: int = 0
    days: DaysByValue = field(default_factory=dict)

    @classmethod
    def empty(cls) -> UniqueCountState:
        return cls()

    def add(self, point: EventPoint) -> UniqueCountState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> UniqueCountState:
        ops = dict(self.last_ops)
        days = {value: dict(per_day) for value, per_day in self.days.items()}
        counted, unbillable = self.events_count, self.unbillable_count
        for point in points:
            operation = _operation(point)
            if point.text is None or operation is None:
                unbillable += 1
                continue
            counted += 1
            op = UniqueOp(point.timestamp, point.seq, operation)
            _keep_latest(ops, point.text, op)
            if point.day is not None:
                _merge_day(days, point.text, point.day.isoformat(), DayOps.of(op))
        return UniqueCountState(ops, counted, unbillable, days)

    def merge(self, other: UniqueCountState) -> UniqueCountState:
        ops = dict(self.last_ops)
        for value, op in other.last_ops.items():
            _keep_latest(ops, value, op)
        days = {value: dict(per_day) for value, per_day in self.days.items()}
        for value, per_day in other.days.items():
            for day, day_ops in per_day.items():
                _merge_day(days, value, day, day_ops)
        return UniqueCountState(
            ops,
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
            days,
        )

    def is_active(self, value: str) -> bool:
        op = self.last_ops.get(value)
        return op is not None and op.operation is Operation.ADD

    def result(self) -> Decimal:
        return Decimal(sum(1 for op in self.last_ops.values() if op.operation is Operation.ADD))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": AggregationType.UNIQUE_COUNT.value,
            "last_ops": {
                value: [iso_utc(op.timestamp), op.seq, op.operation.value]
                for value, op in sorted(self.last_ops.items())
            },
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
            **({"days": {value: {day: ops.to_json() for day, ops in sorted(per_day.items())}
                         for value, per_day in sorted(self.days.items())}}
               if self.days else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UniqueCountState:
        _check_type(data, AggregationType.UNIQUE_COUNT)
        ops = {
            value: UniqueOp(datetime.fromisoformat(stamp), int(seq), Operation(operation))
            for value, (stamp, seq, operation) in data["last_ops"].items()
        }
        days = {value: {day: DayOps.from_json(item) for day, item in per_day.items()}
                for value, per_day in (data.get("days") or {}).items()}
        return cls(ops, int(data["events_count"]), int(data["unbillable_count"]), days)


def _operation(point: EventPoint) -> Operation | None:
    raw = point.properties.get("operation_type", Operation.ADD.value)
    try:
        return Operation(raw)
    except ValueError:
        return None


def _keep_latest(ops: dict[str, UniqueOp], value: str, op: UniqueOp) -> None:
    current = ops.get(value)
    if current is None or op.key() > current.key():
        ops[value] = op


def _merge_day(days: dict[str, dict[str, DayOps]], value: str, day: str, ops: DayOps) -> None:
    per_day = days.setdefault(value, {})
    current = per_day.get(day)
    per_day[day] = ops if current is None else current.merge(ops)


_ONE: Final = Decimal(1)


def _kept_operations(per_day: Mapping[str, DayOps]) -> list[tuple[date, UniqueOp]]:
    """The operations Lago's prorated unique count keeps for one value, all history.

    Lago keeps the status changes (an add after a remove, a remove after an add), then per
    day only the last change (an earlier one is undone the same day), except the value's very
    first change, which is always kept; then drops a kept operation that repeats the previous
    kept one. In days: the first add ever, and each day that changed the status, with the
    day's final status.
    """
    kept: list[tuple[date, UniqueOp]] = []
    active = False
    seen_add = False
    for day_text in sorted(per_day):
        ops = per_day[day_text]
        day = date.fromisoformat(day_text)
        if ops.first_add is not None and not seen_add:
            kept.append((day, ops.first_add))
            seen_add = True
        if (ops.first_add is not None and not active) or (ops.has_remove and active):
            kept.append((day, ops.last))
        active = ops.last.operation is Operation.ADD
    deduped: list[tuple[date, UniqueOp]] = []
    for item in kept:
        if deduped and deduped[-1][1].operation is item[1].operation:
            continue
        deduped.append(item)
    return deduped


def prorate_unique(state: UniqueCountState, window: ProrationWindow) -> ProratedUnits:
    """The prorated units of a recurring unique count's merged state (all periods so far).

    Each kept add counts the local days from its day (or the first charged day) to the day
    of the next kept operation (a removal's day counts) or the last charged day, inclusive,
    over the full period's days; an add removed before the charged span counts 0. Entries, in
    time order over all history, are Lago's per-event breakdown: (+1, days / period days) per
    kept add, (-1, 0) per kept remove. A value without per-day operations (folded before they
    were kept) counts as active from the first charged day when its last operation is an add.
    """
    timed: list[tuple[tuple[datetime, int, str], Decimal, Decimal]] = []
    total = ZERO
    legacy = datetime.combine(window.start, time.min, UTC)
    with localcontext(_WIDE):
        for value in sorted(set(state.last_ops) | set(state.days)):
            per_day = state.days.get(value)
            if not per_day:
                if state.is_active(value):
                    share = _span(window.start, window.last, window)
                    timed.append(((legacy, -1, value), _ONE, share))
                    total += share
                continue
            kept = _kept_operations(per_day)
            for index, (day, op) in enumerate(kept):
                key = (op.timestamp, op.seq, value)
                if op.operation is Operation.REMOVE:
                    timed.append((key, -_ONE, ZERO))
                    continue
                end = kept[index + 1][0] if index + 1 < len(kept) else window.last
                share = ZERO if end < window.start else _span(max(day, window.start), end, window)
                timed.append((key, _ONE, share))
                total += share
        prorated = total.quantize(_PLACES, rounding=ROUND_CEILING)
    timed.sort(key=lambda item: item[0])
    entries = tuple((full, share.quantize(_PLACES, rounding=ROUND_CEILING))
                    for _, full, share in timed)
    return ProratedUnits(state.result(), prorated, entries)


def _span(first: date, last: date, window: ProrationWindow) -> Decimal:
    """Days from ``first`` to ``last`` inclusive over the period's days (Lago ceils each
    per-event value to 5 decimals, and the total once)."""
    return Decimal((last - first).days + 1) / Decimal(window.days)


def _unique_deltas(
    ordered: list[EventPoint], prior: UniqueCountState
) -> list[tuple[EventPoint, Decimal]]:
    ops = dict(prior.last_ops)
    deltas: list[tuple[EventPoint, Decimal]] = []
    for point in ordered:
        operation = _operation(point)
        if point.text is None or operation is None:
            deltas.append((point, ZERO))
            continue
        before = _active(ops, point.text)
        _keep_latest(ops, point.text, UniqueOp(point.timestamp, point.seq, operation))
        deltas.append((point, Decimal(_active(ops, point.text) - before)))
    return deltas


def _active(ops: Mapping[str, UniqueOp], value: str) -> int:
    op = ops.get(value)
    return 1 if op is not None and op.operation is Operation.ADD else 0



class UniqueCount(AggregationDefinition[UniqueCountState]):
    kind = AggregationType.UNIQUE_COUNT
    state_type = UniqueCountState
    recurring_allowed = True
    carries_states = True
    prorates = True
    pay_in_advance = True
    in_advance_reads_billed_events = True
    reports_not_a_number = False
    sql_fold = "unique"

    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> UniqueCountState:
        """The whole state is the row's jsonb ``state`` (decoded, decimals kept exact)."""
        return UniqueCountState.from_json(row["state"])

    def prorate(self, state: UniqueCountState, window: ProrationWindow) -> ProratedUnits:
        return prorate_unique(state, window)

    def counts(self, point: EventPoint) -> bool:
        """A value with an operation the state keeps (add, remove; add by default)."""
        return point.text is not None and _operation(point) is not None

    def billable_in_advance(self, point: EventPoint) -> bool:
        return point.text is not None

    def in_advance_units(self, ordered: Sequence[EventPoint], prior: Any = None) -> list[Decimal]:
        """Lago's +1/-1/0 given the values' state before these events (``prior``)."""
        return [u for _, u in _unique_deltas(list(ordered), prior or UniqueCountState())]


UNIQUE_COUNT_AGG: Final = UniqueCount()
