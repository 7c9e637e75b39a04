"""Corrections: voiding events and re-rating what they counted in; voiding invoices and
regenerating them (credit notes and adjustments will live here too).

The room's only way in from outside it (docs/architecture.md §8). The rules are
``tallyflow.models.voids`` (pure).
"""

from tallyflow.tasks.corrections.invoice_voids import (
    InvoiceVoidRefused,
    RegenerateDone,
    VoidDone,
    regenerate_invoice,
    void_invoice,
)
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
    "InvoiceVoidRefused",
    "RegenerateDone",
    "Rerate",
    "VoidError",
    "VoidDone",
    "VoidResult",
    "event_status",
    "keys_of_object",
    "refusals_on",
    "regenerate_invoice",
    "rerate_voids",
    "void_and_rerate",
    "void_invoice",
    "void_on",
]
