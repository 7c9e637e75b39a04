"""The docs' "not implemented" claims never contradict a command (issue 32, item 6).

Every sentence of README.md and docs/*.md that says something is missing ("not implemented",
"not supported yet", "not yet implemented") is read; none may name a feature that a command
of the CLI does. Each feature below is paired with the command that does it, and the test
checks that the command exists, so the pairing cannot go stale either way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLAIM = re.compile(r"not implemented|not supported yet|not yet implemented|not yet supported",
                   re.IGNORECASE)

# feature words a gap claim must not use -> the command that implements the feature
IMPLEMENTED: dict[str, tuple[str, ...]] = {
    r"pay[- _]in[- _]advance (plans|charges)|charges paid in advance":
        ("invoices", "advance-fees"),
    r"terminations?\b": ("subscriptions", "terminate"),
    r"plan changes?|upgrades?|downgrades?": ("subscriptions", "change-plan"),
    r"invoice pdfs?|\bpdfs?\b": ("invoices", "pdfs"),
    r"\bwallets?\b(?!'s)|prepaid credits": ("wallets",),  # "a wallet's X": an option of one
    r"\bvoids?\b|voiding": ("events", "void"),
    r"billing health|prometheus( metrics)?": ("health",),
    r"run history": ("runs",),
    r"backfills?": ("billing", "run"),
    r"\bcoupons?\b": ("coupons", "apply"),
    r"credit notes?": ("credit-notes", "create"),
    r"progressive billing|usage thresholds?|lifetime usage": ("subscriptions", "bill-thresholds"),
}


def _claims() -> list[tuple[str, str]]:
    """(page, sentence) for each sentence that claims a gap."""
    found = []
    for page in PAGES:
        text = " ".join(page.read_text().split())
        for sentence in re.split(r"(?<=[.;])\s+(?=[A-Z-])", text):
            if CLAIM.search(sentence):
                found.append((page.name, sentence))
    return found


def _has_command(path: tuple[str, ...]) -> bool:
    from tallyflow.cli.main import app

    command = get_command(app)
    for name in path:
        sub = getattr(command, "commands", {}).get(name)
        if sub is None:
            return False
        command = sub
    return True


@pytest.mark.parametrize("pattern", sorted(IMPLEMENTED))
def test_each_listed_feature_has_its_command(pattern: str) -> None:
    assert _has_command(IMPLEMENTED[pattern]), IMPLEMENTED[pattern]


def test_no_gap_claim_names_something_a_command_does() -> None:
    claims = _claims()
    assert claims, "the scan found no claim at all: its pattern no longer matches the docs"
    contradicted = [
        f"{page}: {sentence[:160]} (but `tallyflow {' '.join(IMPLEMENTED[p])}` exists)"
        for page, sentence in claims for p in IMPLEMENTED
        if re.search(p, CLAIM.split(sentence, maxsplit=1)[1], re.IGNORECASE)
    ]
    assert contradicted == []


def test_the_scan_catches_the_old_readme_contradiction() -> None:
    """The README once said "Not implemented yet: pay-in-advance plans and charges,
    terminations and plan changes" beside the commands doing them: the check flags it."""
    sentence = "- Not implemented yet: pay-in-advance plans and charges, terminations."
    tail = CLAIM.split(sentence, maxsplit=1)[1]
    hits = [p for p in IMPLEMENTED if re.search(p, tail, re.IGNORECASE)]
    assert len(hits) == 2
