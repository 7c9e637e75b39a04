"""Usage state: fold ingested objects into per-period aggregation state, exactly once.

Why it is exactly once: ``tallyflow.tasks.folding.fold``. Pricing that state is
``tallyflow.tasks.usage`` (I/O) over ``tallyflow.models.rating`` (pure).
"""

from tallyflow.tasks.folding.fold import (
    fold_pending,
    rebuild_states,
    rebuild_subscription,
    summarize_new_events,
)
from tallyflow.tasks.folding.inputs import (
    DEFAULT_FOLD_OBJECTS,
    FOLD_LOCK,
    PLAIN_DECIMAL_SQL,
    archive_horizon,
    in_force,
    keeps_days,
    load_metrics,
    load_subscription_rows,
    loads_exact,
)
from tallyflow.tasks.folding.sql import FoldSummary, KeySql, PeriodRows, fold_objects
from tallyflow.tasks.folding.states import (
    StoredStates,
    StoredTallies,
    filter_key_of,
    fold_pending_events,
    group_values_of,
    merge_stored,
    read_states,
    state_of_row,
)

__all__ = [
    "DEFAULT_FOLD_OBJECTS",
    "FOLD_LOCK",
    "PLAIN_DECIMAL_SQL",
    "FoldSummary",
    "KeySql",
    "PeriodRows",
    "StoredStates",
    "StoredTallies",
    "archive_horizon",
    "filter_key_of",
    "fold_objects",
    "fold_pending",
    "fold_pending_events",
    "group_values_of",
    "in_force",
    "keeps_days",
    "load_metrics",
    "load_subscription_rows",
    "loads_exact",
    "merge_stored",
    "read_states",
    "rebuild_states",
    "rebuild_subscription",
    "state_of_row",
    "summarize_new_events",
]
