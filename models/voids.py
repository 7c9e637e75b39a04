"""Voiding an event: which events may be voided, and the row ranges a bad batch names.

Pure rules (docs/architecture.md §4); ``tasks/corrections/voids.py`` reads the facts and
applies them. A
void only takes back what nothing has billed for good yet: an event in a period on a finalized
invoice, or one already billed by a charge paid in advance, was billed on a document, and
taking it back needs a credit note (not a void); an archived event has left PostgreSQL with its
finalized period. Everything else is voided and re-rated through the usual correction path.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VoidOutcome(StrEnum):
    """What a void did to one event key: the codes the CLI and the API report."""

    VOIDED = "voided"
    ALREADY_VOIDED = "already_voided"  # a no-op: the first void stands
    INVOICE_FINALIZED = "invoice_finalized"
    BILLED_IN_ADVANCE = "billed_in_advance"
    ARCHIVED = "archived"
    NOT_FOUND = "not_found"


REFUSALS: dict[VoidOutcome, str] = {
    VoidOutcome.INVOICE_FINALIZED: (
        "its period is on a finalized invoice: the invoice stands; a credit note corrects it"),
    VoidOutcome.BILLED_IN_ADVANCE: (
        "a charge paid in advance billed it already: its fee stands; a credit note corrects it"),
    VoidOutcome.ARCHIVED: (
        "it was archived with its finalized period (tallyflow archive): nothing bills it any"
        " more"),
    VoidOutcome.NOT_FOUND: "no stored event has this external_subscription_id and transaction_id",
}


@dataclass(frozen=True)
class EventFacts:
    """What decides whether one stored event may be voided (read under the void's lock)."""

    voided: bool
    on_finalized_invoice: bool
    billed_in_advance: bool


def void_decision(facts: EventFacts | None, archived: bool = False) -> VoidOutcome:
    """The outcome for one key: ``facts`` None when no stored event has it (``archived``: an
    archive file holds it). An already voided event is reported first: its void stands
    whatever happened since (a finalized invoice already left it out)."""
    if facts is None:
        return VoidOutcome.ARCHIVED if archived else VoidOutcome.NOT_FOUND
    if facts.voided:
        return VoidOutcome.ALREADY_VOIDED
    if facts.on_finalized_invoice:
        return VoidOutcome.INVOICE_FINALIZED
    if facts.billed_in_advance:
        return VoidOutcome.BILLED_IN_ADVANCE
    return VoidOutcome.VOIDED


def parse_rows(spec: str) -> list[tuple[int, int]]:
    """``"1-5,9"`` -> ``[(1, 5), (9, 9)]``: row numbers as ``tallyflow rejects`` and
    ``tallyflow events show`` print them (the first record is row 1). ``ValueError`` for
    anything else, so a typo never voids the wrong rows."""
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise ValueError(f"{spec!r} is not a list of rows like 1-5,9")
        low = int(first)
        high = int(last) if dash else low
        if low < 1 or high < low:
            raise ValueError(f"{part!r}: rows start at 1 and a range goes up (1-5)")
        ranges.append((low, high))
    return ranges
