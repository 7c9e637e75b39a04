"""Runs: what every flow shares about its runs: their history and hooks, names, retries of
transient failures, and containment of a unit that fails alone.

The room's only way in from outside it (docs/architecture.md §8); every other room depends on
this one, which depends on none of them.
"""

from tallyflow.tasks.runs.containment import (
    LISTED,
    ContainedFailures,
    contain,
    containable,
    contained_events,
    failure,
    failure_message,
    names_of,
    withheld_customers,
    withheld_task,
)
from tallyflow.tasks.runs.history import (
    CANCEL_LISTENERS,
    FINAL,
    HOOKS,
    adopt_prefect_failures,
    cause_of,
    describe_error,
    failed_objects,
    reap_stale,
    recent_runs,
    tracked,
)
from tallyflow.tasks.runs.names import name_scheduled_runs_task
from tallyflow.tasks.runs.retry import is_transient, transient_retries

__all__ = [
    "CANCEL_LISTENERS",
    "FINAL",
    "HOOKS",
    "LISTED",
    "ContainedFailures",
    "adopt_prefect_failures",
    "cause_of",
    "contain",
    "containable",
    "contained_events",
    "describe_error",
    "failed_objects",
    "failure",
    "failure_message",
    "is_transient",
    "name_scheduled_runs_task",
    "names_of",
    "reap_stale",
    "recent_runs",
    "tracked",
    "transient_retries",
    "withheld_customers",
    "withheld_task",
]
