"""Which charges may be prorated: Lago's Charge#validate_prorated, table-driven.

Lago: prorated only on a recurring metric that is not a weighted sum, and only standard,
graduated or volume in arrears, or standard in advance. Tallyflow refuses by name what it does
not bill yet: prorated pay-in-advance charges.
"""

from __future__ import annotations

from typing import Any

import pytest

from tallyflow.models.catalog import validate_documents
from tests.models.test_catalog import BASE, charge, metric, plan, ranges

GRADUATED = {"graduated_ranges": ranges((0, 10), (11, None))}
VOLUME = {"volume_ranges": ranges((0, 10), (11, None))}


def _metric(agg: str, recurring: bool) -> dict[str, Any]:
    field = None if agg == "count_agg" else "x"
    interval = "seconds" if agg == "weighted_sum_agg" else None
    return metric(code="seats", aggregation_type=agg, field_name=field, recurring=recurring,
                  weighted_interval=interval)


def _charge(model: str, properties: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return charge(model, properties, billable_metric_code="seats", prorated=True, **changes)


CASES = [
    # (id, aggregation, recurring, charge model, properties, pay_in_advance, message or None)
    ("sum-standard", "sum_agg", True, "standard", {"amount": "1"}, False, None),
    ("sum-graduated", "sum_agg", True, "graduated", GRADUATED, False, None),
    ("sum-volume", "sum_agg", True, "volume", VOLUME, False, None),
    ("sum-package", "sum_agg", True, "package",
     {"amount": "1", "package_size": 10, "free_units": 0}, False,
     "standard, graduated and volume charges only, not package"),
    ("sum-percentage", "sum_agg", True, "percentage", {"rate": "1"}, False,
     "standard, graduated and volume charges only, not percentage"),
    ("not-recurring", "sum_agg", False, "standard", {"amount": "1"}, False,
     "needs a recurring billable metric"),
    ("count", "count_agg", False, "standard", {"amount": "1"}, False,
     "needs a recurring billable metric"),
    ("weighted-sum", "weighted_sum_agg", True, "standard", {"amount": "1"}, False,
     "not available for weighted_sum_agg"),
    ("in-advance-standard", "sum_agg", True, "standard", {"amount": "1"}, True,
     "prorated pay-in-advance charges are not supported"),
    ("unique-count-standard", "unique_count_agg", True, "standard", {"amount": "1"}, False,
     None),
    ("unique-count-volume", "unique_count_agg", True, "volume", VOLUME, False, None),
    ("unique-count-not-recurring", "unique_count_agg", False, "standard", {"amount": "1"},
     False, "needs a recurring billable metric"),
]


@pytest.mark.parametrize(
    ("agg", "recurring", "model", "properties", "advance", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_prorated_rules(
    agg: str, recurring: bool, model: str, properties: dict[str, Any], advance: bool,
    message: str | None,
) -> None:
    envelopes = [*BASE, _metric(agg, recurring),
                 plan(_charge(model, properties, pay_in_advance=advance))]
    result = validate_documents([(f"d{i}.json", 0, e) for i, e in enumerate(envelopes)])
    prorated = [e.message for e in result.errors if e.path == "plan.charges[0].prorated"]
    if message is None:
        assert result.errors == []
    else:
        assert len(prorated) == 1 and message in prorated[0], result.errors


def test_prorated_false_is_accepted_anywhere() -> None:
    envelopes = [*BASE, _metric("count_agg", False),
                 plan(charge("package", {"amount": "1", "package_size": 10, "free_units": 0},
                             billable_metric_code="seats", prorated=False))]
    result = validate_documents([(f"d{i}.json", 0, e) for i, e in enumerate(envelopes)])
    assert result.errors == []
