"""Usage alerts: alerts on subscriptions as catalog objects, their evaluation against current
usage, and the alerts they triggered (docs/architecture.md §18; user guide docs/alerts.md).

The room's only way in from outside it (docs/architecture.md §8). It reads current usage
through ``tallyflow.tasks.usage`` and announces through ``tallyflow.tasks.webhooks``.
"""

from tallyflow.tasks.alerts.evaluate import AlertRun, evaluate_alerts, evaluate_subscription
from tallyflow.tasks.alerts.store import (
    AlertNotFound,
    create_alert,
    delete_alert,
    get_alert,
    list_alerts,
    triggered_alerts,
    update_alert,
)
from tallyflow.tasks.alerts.tasks import evaluate_task

__all__ = [
    "AlertNotFound",
    "AlertRun",
    "create_alert",
    "delete_alert",
    "evaluate_alerts",
    "evaluate_subscription",
    "evaluate_task",
    "get_alert",
    "list_alerts",
    "triggered_alerts",
    "update_alert",
]
