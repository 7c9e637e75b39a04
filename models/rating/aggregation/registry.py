"""The aggregation registry (Lago's ``BillableMetrics::AggregationFactory``): kind -> module.

Adding an aggregation is its module in this package, its ``AggregationType`` member and one
line in ``_DEFINITIONS`` (docs/architecture.md §9); the catalog's rules, pricing, pay in
advance and the SQL fold ask the registered definition. The functions below are the
operations over any state, dispatched through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from tallyflow.models.rating.aggregation.count import COUNT_AGG
from tallyflow.models.rating.aggregation.latest import LATEST_AGG
from tallyflow.models.rating.aggregation.max import MAX_AGG
from tallyflow.models.rating.aggregation.sum import SUM_AGG
from tallyflow.models.rating.aggregation.types import (
    ZERO,
    AggregationDefinition,
    AggregationState,
    AggregationType,
    EventPoint,
    RoundingFunction,
    TimeWindow,
    apply_rounding,
)
from tallyflow.models.rating.aggregation.unique_count import UNIQUE_COUNT_AGG, UniqueCountState
from tallyflow.models.rating.aggregation.weighted_sum import WEIGHTED_SUM_AGG

_DEFINITIONS: Final[tuple[AggregationDefinition[Any], ...]] = (
    COUNT_AGG,
    SUM_AGG,
    MAX_AGG,
    LATEST_AGG,
    UNIQUE_COUNT_AGG,
    WEIGHTED_SUM_AGG,
)

AGGREGATIONS: Final[Mapping[AggregationType, AggregationDefinition[Any]]] = MappingProxyType(
    {definition.kind: definition for definition in _DEFINITIONS}
)
"""Lago's ``aggregation_type`` -> its definition."""

_BY_STATE: Final = {definition.state_type: definition for definition in _DEFINITIONS}

AnyState = AggregationState
"""Any registered kind's state (the protocol every state implements)."""

RECURRING_ALLOWED: Final = frozenset(d.kind for d in _DEFINITIONS if d.recurring_allowed)


def definition_of(aggregation_type: AggregationType | str) -> AggregationDefinition[Any]:
    """The registered kind (``ValueError`` when the name is not an ``AggregationType``)."""
    return AGGREGATIONS[AggregationType(aggregation_type)]


def state_definition(state: AnyState) -> AggregationDefinition[Any]:
    """The kind a state belongs to."""
    return _BY_STATE[type(state)]


def check_recurring(aggregation_type: AggregationType | str, recurring: bool) -> None:
    """Raise ``ValueError`` when a metric asks for ``recurring`` where Lago forbids it."""
    kind = AggregationType(aggregation_type)
    if recurring and kind not in RECURRING_ALLOWED:
        raise ValueError(f"recurring is not allowed for {kind.value}")


def empty_state(aggregation_type: AggregationType | str) -> AnyState:
    """The identity state of an aggregation (merging it changes nothing)."""
    return definition_of(aggregation_type).empty()  # type: ignore[no-any-return]


def state_from_json(data: Mapping[str, Any]) -> AnyState:
    """Rebuild any state from its ``to_json`` form (dispatch on ``data["type"]``)."""
    return definition_of(data["type"]).from_json(data)  # type: ignore[no-any-return]


def merge_all(aggregation_type: AggregationType | str, states: Iterable[AnyState]) -> AnyState:
    """Merge many states (e.g. every period up to now for a recurring sum/unique_count)."""
    merged = empty_state(aggregation_type)
    for state in states:
        merged = merged.merge(state)
    return merged


def aggregate(
    state: AnyState,
    *,
    window: TimeWindow | None = None,
    initial_level: Decimal = ZERO,
    rounding_function: RoundingFunction | str | None = None,
    rounding_precision: int | None = None,
) -> Decimal:
    """The metric's units for a state: its result, then the metric's rounding.

    ``window`` (and ``initial_level`` when recurring) are needed only for kinds with
    ``needs_window`` (weighted_sum).
    """
    value = state_definition(state).units(state, window, initial_level)
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
    definition = definition_of(aggregation_type)
    ordered = sorted(points, key=lambda p: p.order_key)
    return list(zip(ordered, definition.in_advance_units(ordered, prior), strict=True))
