"""Corrections: voiding events and re-rating what they counted in (credit notes and
adjustments will live here too).

The room's only way in from outside it (docs/architecture.md §8). The rules are
``tallyflow.models.voids`` (pure).
"""

from tallyflow.tasks.corrections.voids import (
    EventKey,
    Rerate,
    VoidError,
    VoidResult,
    event_status,
    keys_of_object,
    refusals_on,
    rerate_voids,
    void_and_rerate,
    void_on,
)

__all__ = [
    "EventKey",
    "Rerate",
    "VoidError",
    "VoidResult",
    "event_status",
    "keys_of_object",
    "refusals_on",
    "rerate_voids",
    "void_and_rerate",
    "void_on",
]
