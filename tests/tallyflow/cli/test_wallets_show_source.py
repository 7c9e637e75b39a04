"""``tallyflow wallets show`` says where its ongoing usage came from (docs/architecture.md §21):
the balance refresh's running figure (and as of when), rated live, or both."""

from __future__ import annotations

import pytest

from tallyflow.cli.wallets import _usage_source

AT = "2026-12-07T10:00:00+00:00"


@pytest.mark.parametrize(
    ("sources", "said"),
    [
        (["running_usage"], f"balance refresh as of {AT}"),
        (["running_usage", "live"], f"balance refresh as of {AT}, some rated live"),
        (["live"], "rated live"),
        ([], "rated live"),
    ],
)
def test_the_source_is_said(sources: list[str], said: str) -> None:
    usage = {"refreshed_at": AT, "subscriptions": [{"source": s} for s in sources]}
    assert _usage_source(usage) == said
