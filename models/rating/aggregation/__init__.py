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

from tallyflow.models.rating.aggregation.ops import (
    AnyState,
    aggregate,
    apply_rounding,
    empty_state,
    merge_all,
    per_event_units,
    period_window,
    state_from_json,
)
from tallyflow.models.rating.aggregation.prorated import (
    ProratedUnits,
    ProrationWindow,
    prorate_sum,
    prorate_unique,
)
from tallyflow.models.rating.aggregation.states import CountState, LatestState, MaxState, SumState
from tallyflow.models.rating.aggregation.types import (
    RECURRING_ALLOWED,
    ZERO,
    AggregationState,
    AggregationType,
    EventPoint,
    RoundingFunction,
    TimeWindow,
    check_recurring,
    epoch_seconds,
    tidy,
)
from tallyflow.models.rating.aggregation.unique import (
    DayOps,
    Operation,
    UniqueCountState,
    UniqueOp,
)
from tallyflow.models.rating.aggregation.weighted import WeightedSumState

__all__ = [
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
    "empty_state",
    "epoch_seconds",
    "merge_all",
    "per_event_units",
    "prorate_sum",
    "prorate_unique",
    "period_window",
    "state_from_json",
    "tidy",
]
