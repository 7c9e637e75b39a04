"""Operations over any state: empty, from JSON, merge, rounding, aggregate, per-event units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Final

from tallyflow.models.rating.aggregation.states import CountState, LatestState, MaxState, SumState
from tallyflow.models.rating.aggregation.types import (
    _WIDE,
    ZERO,
    AggregationType,
    EventPoint,
    RoundingFunction,
    TimeWindow,
)
from tallyflow.models.rating.aggregation.unique import (
    Operation,
    UniqueCountState,
    UniqueOp,
    _keep_latest,
    _operation,
)
from tallyflow.models.rating.aggregation.weighted import WeightedSumState

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
