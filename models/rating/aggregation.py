"""Aggregation semantics (Lago's ``*_agg``) as mergeable state.

Why state and not functions over event lists: the hourly flows must cost what the new events
cost, not what the whole period costs. The DB layer keeps one state per
(subscription, metric, period, metric filter key values, pricing group values), folds each new
batch into it, and merges states across keys to price a charge bucket. Every ``merge`` here is
associative and commutative, so any split or order of the events gives the state that folding
all of them at once would give (the test suite checks this for every aggregation).

States are frozen: ``add``/``fold``/``merge`` return new states. ``to_json``/``state_from_json``
give jsonb-ready dicts with decimals as strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from typing import Any, Final, Protocol, Self

from models.rating.filters import properties_as_text
from models.rating.money import WIDE, parse_plain_decimal

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
    that breaks timestamp ties.
    """

    timestamp: datetime
    seq: int
    value: Decimal | None
    properties: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None
    precise_total_amount_cents: Decimal | None = None

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
    """sum_agg; also carries the sum of ``precise_total_amount_cents`` for the dynamic model."""

    total: Decimal = ZERO
    events_count: int = 0
    unbillable_count: int = 0
    precise_total_amount_cents: Decimal = ZERO

    @classmethod
    def empty(cls) -> SumState:
        return cls()

    def add(self, point: EventPoint) -> SumState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> SumState:
        total, counted, unbillable = self.total, self.events_count, self.unbillable_count
        cents = self.precise_total_amount_cents
        for point in points:
            if point.precise_total_amount_cents is not None:
                cents = WIDE.add(cents, point.precise_total_amount_cents)
            if point.value is None:
                unbillable += 1
                continue
            total = WIDE.add(total, point.value)
            counted += 1
        return SumState(total, counted, unbillable, cents)

    def merge(self, other: SumState) -> SumState:
        return SumState(
            WIDE.add(self.total, other.total),
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
            WIDE.add(self.precise_total_amount_cents, other.precise_total_amount_cents),
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
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SumState:
        _check_type(data, AggregationType.SUM)
        return cls(
            Decimal(data["total"]),
            int(data["events_count"]),
            int(data["unbillable_count"]),
            Decimal(data.get("precise_total_amount_cents", "0")),
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
            "timestamp": None if self.timestamp is None else _iso(self.timestamp),
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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


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
class UniqueCountState:
    """unique_count_agg, stored as the last operation per distinct value.

    Lago scores each value's operations in time order: an operation equal to the previous one
    adds 0, otherwise add +1 / remove -1, starting from "removed". Those scores telescope to 1
    when the value's last operation is ``add`` and 0 otherwise, so keeping only the last
    operation (by timestamp, then seq) per value is exact, and merging is a per-value max.
    The state grows with the number of distinct values, not with the number of events.
    """

    last_ops: Mapping[str, UniqueOp] = field(default_factory=dict)
    events_count: int = 0
    unbillable_count: int = 0

    @classmethod
    def empty(cls) -> UniqueCountState:
        return cls()

    def add(self, point: EventPoint) -> UniqueCountState:
        return self.fold((point,))

    def fold(self, points: Iterable[EventPoint]) -> UniqueCountState:
        ops = dict(self.last_ops)
        counted, unbillable = self.events_count, self.unbillable_count
        for point in points:
            operation = _operation(point)
            if point.text is None or operation is None:
                unbillable += 1
                continue
            counted += 1
            _keep_latest(ops, point.text, UniqueOp(point.timestamp, point.seq, operation))
        return UniqueCountState(ops, counted, unbillable)

    def merge(self, other: UniqueCountState) -> UniqueCountState:
        ops = dict(self.last_ops)
        for value, op in other.last_ops.items():
            _keep_latest(ops, value, op)
        return UniqueCountState(
            ops,
            self.events_count + other.events_count,
            self.unbillable_count + other.unbillable_count,
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
                value: [_iso(op.timestamp), op.seq, op.operation.value]
                for value, op in sorted(self.last_ops.items())
            },
            "events_count": self.events_count,
            "unbillable_count": self.unbillable_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UniqueCountState:
        _check_type(data, AggregationType.UNIQUE_COUNT)
        ops = {
            value: UniqueOp(datetime.fromisoformat(stamp), int(seq), Operation(operation))
            for value, (stamp, seq, operation) in data["last_ops"].items()
        }
        return cls(ops, int(data["events_count"]), int(data["unbillable_count"]))


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


AnyState = CountState | SumState | MaxState | LatestState | UniqueCountState | WeightedSumState

_STATE_CLASSES: Final[dict[AggregationType, type[AnyState]]] = {
    AggregationType.COUNT: CountState,
    AggregationType.SUM: SumState,
    AggregationType.MAX: MaxState,
    AggregationType.LATEST: LatestState,
    AggregationType.UNIQUE_COUNT: UniqueCountState,
    AggregationType.WEIGHTED_SUM: WeightedSumState,
}


def empty_state(aggregation_type: AggregationType | str) -> AnyState:
    """The identity state of an aggregation (merging it changes nothing)."""
    return _STATE_CLASSES[AggregationType(aggregation_type)]()


def state_from_json(data: Mapping[str, Any]) -> AnyState:
    """Rebuild any state from its ``to_json`` form (dispatch on ``data["type"]``)."""
    kind = AggregationType(data["type"])
    return _STATE_CLASSES[kind].from_json(data)


def merge_all(aggregation_type: AggregationType | str, states: Iterable[AnyState]) -> AnyState:
    """Merge many states (e.g. every period up to now for a recurring sum/unique_count)."""
    merged = empty_state(aggregation_type)
    for state in states:
        merged = merged.merge(state)  # type: ignore[arg-type]
    return merged


def apply_rounding(
    value: Decimal,
    rounding_function: RoundingFunction | str | None,
    precision: int | None,
) -> Decimal:
    """Metric rounding of an aggregated result; precision may be negative (tens, hundreds).

    ``round`` is half away from zero (Ruby's BigDecimal default), ``ceil``/``floor`` go toward
    +/- infinity: 123.456 -> round(-2) = 100, ceil(-2) = 200.
    """
    if rounding_function is None:
        return value
    mode = {
        RoundingFunction.ROUND: ROUND_HALF_UP,
        RoundingFunction.CEIL: ROUND_CEILING,
        RoundingFunction.FLOOR: ROUND_FLOOR,
    }[RoundingFunction(rounding_function)]
    places = precision or 0
    with localcontext(_WIDE):
        rounded = value.quantize(Decimal(1).scaleb(-places), rounding=mode)
        return rounded.quantize(Decimal(1)) if places < 0 else rounded


def aggregate(
    state: AnyState,
    *,
    window: TimeWindow | None = None,
    initial_level: Decimal = ZERO,
    rounding_function: RoundingFunction | str | None = None,
    rounding_precision: int | None = None,
) -> Decimal:
    """The metric's units for a state: its result, then the metric's rounding.

    ``window`` (and ``initial_level`` when recurring) are needed only for weighted_sum.
    """
    if isinstance(state, WeightedSumState):
        if window is None:
            raise ValueError("weighted_sum_agg needs the period window")
        value = state.result(window, initial_level)
    else:
        value = state.result()
    return apply_rounding(value, rounding_function, rounding_precision)


def per_event_units(
    aggregation_type: AggregationType | str,
    points: Iterable[EventPoint],
    prior: UniqueCountState | None = None,
) -> list[tuple[EventPoint, Decimal]]:
    """Units each event adds, in (timestamp, seq) order, for pay-in-advance charges.

    count: 1; sum: its value (0 when unbillable); unique_count: Lago's +1/-1/0 given the values'
    state before these events (``prior``, e.g. earlier periods when recurring).
    """
    kind = AggregationType(aggregation_type)
    ordered = sorted(points, key=lambda p: p.order_key)
    if kind is AggregationType.COUNT:
        return [(p, Decimal(1)) for p in ordered]
    if kind is AggregationType.SUM:
        return [(p, p.value if p.value is not None else ZERO) for p in ordered]
    if kind is AggregationType.UNIQUE_COUNT:
        return _unique_deltas(ordered, prior or UniqueCountState())
    raise ValueError(f"pay in advance is not available for {kind.value}")


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


def period_window(start: datetime, end_inclusive: datetime, length_seconds: Decimal) -> TimeWindow:
    """A window from inclusive bounds (periods end at 23:59:59.999999)."""
    return TimeWindow(start, end_inclusive + timedelta(microseconds=1), length_seconds)
