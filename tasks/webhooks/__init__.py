"""Webhooks: the outbox written inside billing's transactions, its delivery, endpoints and the
delivery log (docs/architecture.md §17; user guide docs/webhooks.md).

This ``__init__`` is the room's only way in from outside it (docs/architecture.md §8). Other
rooms call ``enqueue`` (and ``subscribed``, when their payload costs queries) on their own
connection, inside the transaction of the change; this room imports no other but ``runs``.
"""

from tallyflow.tasks.webhooks.admin import (
    WebhookError,
    add_endpoint,
    get_endpoint,
    list_endpoints,
    list_webhooks,
    remove_endpoint,
    requeue,
    signing_key,
    update_endpoint,
    webhook_attempts,
)
from tallyflow.tasks.webhooks.delivery import DeliverySummary, Outcome, deliver_pending, send
from tallyflow.tasks.webhooks.events import announce_event_errors, event_error_object
from tallyflow.tasks.webhooks.outbox import Signing, enqueue, enqueue_many, signing, subscribed
from tallyflow.tasks.webhooks.tasks import deliver_task

__all__ = [
    "DeliverySummary",
    "Outcome",
    "Signing",
    "WebhookError",
    "add_endpoint",
    "announce_event_errors",
    "deliver_pending",
    "deliver_task",
    "enqueue",
    "enqueue_many",
    "event_error_object",
    "get_endpoint",
    "list_endpoints",
    "list_webhooks",
    "remove_endpoint",
    "requeue",
    "send",
    "signing",
    "signing_key",
    "subscribed",
    "update_endpoint",
    "webhook_attempts",
]
