"""The void rule and row ranges, pure: which outcome each set of facts gives, first match."""

from __future__ import annotations

import pytest

from tallyflow.models.voids import REFUSALS, EventFacts, VoidOutcome, parse_rows, void_decision


@pytest.mark.parametrize(("facts", "archived", "expected"), [
    (None, False, VoidOutcome.NOT_FOUND),
    (None, True, VoidOutcome.ARCHIVED),
    (EventFacts(voided=False, on_finalized_invoice=False, billed_in_advance=False), False,
     VoidOutcome.VOIDED),
    # a void stands whatever happened since
    (EventFacts(voided=True, on_finalized_invoice=True, billed_in_advance=False), False,
     VoidOutcome.ALREADY_VOIDED),
    (EventFacts(voided=False, on_finalized_invoice=True, billed_in_advance=True), False,
     VoidOutcome.INVOICE_FINALIZED),
    (EventFacts(voided=False, on_finalized_invoice=False, billed_in_advance=True), False,
     VoidOutcome.BILLED_IN_ADVANCE),
])
def test_void_decision(facts: EventFacts | None, archived: bool, expected: VoidOutcome) -> None:
    assert void_decision(facts, archived) is expected


def test_every_refusal_says_why() -> None:
    refusals = set(VoidOutcome) - {VoidOutcome.VOIDED, VoidOutcome.ALREADY_VOIDED}
    assert set(REFUSALS) == refusals


@pytest.mark.parametrize(("spec", "expected"), [
    ("1-5,9", [(1, 5), (9, 9)]),
    (" 3 ", [(3, 3)]),
    ("2-2, 7-8", [(2, 2), (7, 8)]),
])
def test_rows(spec: str, expected: list[tuple[int, int]]) -> None:
    assert parse_rows(spec) == expected


@pytest.mark.parametrize("spec", ["", "0", "5-1", "a", "1-", "-3", "1,,2", "1-2-3", "1.5"])
def test_rows_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="rows|range"):
        parse_rows(spec)
