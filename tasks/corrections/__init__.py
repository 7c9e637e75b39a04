"""Corrections: voiding events and re-rating what they counted in; voiding invoices and
regenerating them; credit notes on finalized invoices (issue, estimate, void, read).

The room's only way in from outside it (docs/architecture.md §8). The rules are
``tallyflow.models.voids`` (pure).
"""

from tallyflow.tasks.corrections.credit_notes import (
    REASONS,
    CreditNoteRefused,
    Issue,
    count_credit_notes,
    credit_note_document,
    estimate_credit_note,
    find_credit_note,
    issue_credit_note,
    issue_termination_credit_note,
    list_credit_notes,
    void_credit_note,
)
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
    "REASONS",
    "CreditNoteRefused",
    "Issue",
    "count_credit_notes",
    "credit_note_document",
    "estimate_credit_note",
    "find_credit_note",
    "issue_credit_note",
    "issue_termination_credit_note",
    "list_credit_notes",
    "void_credit_note",
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
