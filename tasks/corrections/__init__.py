"""Corrections: voiding events and re-rating what they counted in; credit notes on finalized
invoices (issue, estimate, void, read).

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
