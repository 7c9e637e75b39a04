"""Usage: folded state priced into hourly snapshots, the reads of those snapshots, and the
upkeep of their partitions.

The room's only way in from outside it (docs/architecture.md §8). Folding the events is
``tallyflow.tasks.folding``; the prices are ``tallyflow.models.rating`` (pure).
"""

from tallyflow.tasks.usage.changes import (
    ChangeSet,
    capture_time,
    change_set_members,
    complete_change_set,
    complete_change_set_task,
    next_boundary,
    open_change_set,
    open_change_set_task,
)
from tallyflow.tasks.usage.partitions import ensure_partitions_task
from tallyflow.tasks.usage.rating import (
    SnapshotBatch,
    current_usage,
    customer_of_task,
    due_subscriptions,
    due_subscriptions_task,
    event_values_reader,
    fold_new_objects_task,
    load_charges,
    projected_usage,
    rate_subscription,
    rated_usage,
    read_inputs,
    snapshot_contained,
    snapshot_subscriptions,
    snapshot_task,
    usage_as_of_task,
)
from tallyflow.tasks.usage.snapshot_reads import usage_as_of

__all__ = [
    "ChangeSet",
    "capture_time",
    "change_set_members",
    "complete_change_set",
    "complete_change_set_task",
    "next_boundary",
    "open_change_set",
    "open_change_set_task",
    "SnapshotBatch",
    "current_usage",
    "customer_of_task",
    "due_subscriptions",
    "due_subscriptions_task",
    "ensure_partitions_task",
    "event_values_reader",
    "fold_new_objects_task",
    "load_charges",
    "rate_subscription",
    "projected_usage",
    "rated_usage",
    "read_inputs",
    "snapshot_contained",
    "snapshot_subscriptions",
    "snapshot_task",
    "usage_as_of",
    "usage_as_of_task",
]
