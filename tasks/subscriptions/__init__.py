"""Subscriptions: their lifecycle: termination, plan changes, and the final snapshots of
ended periods.

The room's only way in from outside it (docs/architecture.md §8). The rules are
``tallyflow.models.lifecycle`` (pure).
"""

from tallyflow.tasks.subscriptions.lifecycle import (
    LifecycleError,
    change_plan,
    dates_changed,
    final_snapshots_task,
    start_plan_change,
    subscription_standing,
    terminate_subscription,
)

__all__ = [
    "LifecycleError",
    "change_plan",
    "dates_changed",
    "final_snapshots_task",
    "start_plan_change",
    "subscription_standing",
    "terminate_subscription",
]
