"""Conformance for every registered source and mapping, built-in or installed as a plugin.

The checks are the shipped suite (``tallyflow.testing.conformance``, what a plugin's own
repository runs with ``pytest --tallyflow-conformance``); here they run for every registered
source kind and mapping, the built-ins included, on the test database. Nothing here knows a
particular source or mapping: registering one without its fixture (``golden_case``, golden
records) fails the suite on purpose (a source nobody ran end to end is not a source).
"""

from __future__ import annotations

import pytest

from tallyflow.tasks.ingest import plugins
from tallyflow.testing.conformance import MAPPING_CHECKS, SOURCE_CHECKS, Check, Conformance

REGISTRY = plugins.registry()
CASES = [(kind, check) for kind in sorted(REGISTRY.sources) for check in SOURCE_CHECKS] + [
    (name, check) for name in sorted(REGISTRY.mappings) for check in MAPPING_CHECKS]


@pytest.mark.parametrize(("name", "check"), CASES,
                         ids=[f"{name}-{check.name}" for name, check in CASES])
def test_conformance(request: pytest.FixtureRequest, tallyflow_conformance: Conformance,
                     name: str, check: Check) -> None:
    if check.needs_database:
        tallyflow_conformance.engine = request.getfixturevalue("engine")
    tallyflow_conformance.run(name, check)


def test_no_plugin_is_broken(tallyflow_conformance: Conformance) -> None:
    tallyflow_conformance.no_plugin_is_broken()


def test_the_fixture_runs_every_check_of_a_source(
    request: pytest.FixtureRequest, tallyflow_conformance: Conformance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``check(name)``: the checks that can run here, in a row on one database (each starts
    from empty tables), as a plugin's own test calls it (docs/ingest.md)."""
    monkeypatch.delenv("TALLYFLOW_DATABASE_URL", raising=False)
    assert tallyflow_conformance.check("fsspec") == 4  # no database: those that need none
    tallyflow_conformance.engine = request.getfixturevalue("engine")
    assert tallyflow_conformance.check("fsspec") == len(SOURCE_CHECKS)
    assert tallyflow_conformance.check("lago") == len(MAPPING_CHECKS)
