"""Aggregation semantics (Lago's ``*_agg``) as mergeable state, one module per kind.

Each kind (``count``, ``sum``, ``max``, ``latest``, ``unique_count``, ``weighted_sum``) is a
module holding its state and its definition (what the catalog, pricing, pay in advance and the
SQL fold ask of it); ``registry.py`` maps ``AggregationType`` to it (docs/architecture.md §9,
"Adding an aggregation").

Why state and not functions over event lists: the hourly flows must cost what the new events
cost, not what the whole period costs. The DB layer keeps one state per
(subscription, metric, period, metric filter key values, pricing group values), folds each new
batch into it, and merges states across keys to price a charge bucket. Every ``merge`` here is
associative and commutative, so any split or order of the events gives the state that folding
all of them at once would give (the test suite checks this for every aggregation).

States are frozen: ``add``/``fold``/``merge`` return new states. ``to_json``/``state_from_json``
give jsonb-ready dicts with decimals as strings.
"""

from tallyflow.models.rating.aggregation.count import CountState
from tallyflow.models.rating.aggregation.latest import LatestState
from tallyflow.models.rating.aggregation.max import MaxState
from tallyflow.models.rating.aggregation.registry import (
    AGGREGATIONS,
    RECURRING_ALLOWED,
    AnyState,
    aggregate,
    check_recurring,
    definition_of,
    empty_state,
    merge_all,
    per_event_units,
    state_definition,
    state_from_json,
)
from tallyflow.models.rating.aggregation.sum import SumState, prorate_sum
from tallyflow.models.rating.aggregation.types import (
    ZERO,
    AggregationDefinition,
    AggregationState,
    AggregationType,
    EventPoint,
    ProratedUnits,
    ProrationWindow,
    RoundingFunction,
    TimeWindow,
    apply_rounding,
    epoch_seconds,
    period_window,
    tidy,
)
from tallyflow.models.rating.aggregation.unique_count import (
    DayOps,
    Operation,
    UniqueCountState,
    UniqueOp,
    prorate_unique,
)
from tallyflow.models.rating.aggregation.weighted_sum import WeightedSumState

__all__ = [
    "AGGREGATIONS",
    "AggregationDefinition",
    "AggregationState",
    "AggregationType",
    "AnyState",
    "CountState",
    "DayOps",
    "EventPoint",
    "LatestState",
    "MaxState",
    "Operation",
    "ProratedUnits",
    "ProrationWindow",
    "RECURRING_ALLOWED",
    "RoundingFunction",
    "SumState",
    "TimeWindow",
    "UniqueCountState",
    "UniqueOp",
    "WeightedSumState",
    "ZERO",
    "aggregate",
    "apply_rounding",
    "check_recurring",
    "definition_of",
    "empty_state",
    "epoch_seconds",
    "merge_all",
    "per_event_units",
    "prorate_sum",
    "prorate_unique",
    "period_window",
    "state_definition",
    "state_from_json",
    "tidy",
]
