"""The crossing rule of usage alerts (lago-api spec/models/usage_monitoring/alert_spec.rb,
``#find_thresholds_crossed`` and ``#formatted_crossed_thresholds``) and the alert body's checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tallyflow.models.alerts import AlertError, Threshold, check_alert, thresholds_crossed

SPEC = "alert_spec.rb"
# Lago's spec alert: thresholds [10, 30, 50], recurring 100.
LAGO = (Threshold("t10", Decimal(10)), Threshold("t30", Decimal(30)),
        Threshold("t50", Decimal(50)), Threshold("rec", Decimal(100), True))


def _values(previous: int, current: int, thresholds: tuple[Threshold, ...] = LAGO) -> list:
    return [(int(t.value), t.recurring)
            for t in thresholds_crossed(Decimal(previous), Decimal(current), thresholds)]


@pytest.mark.parametrize(("previous", "current", "expected"), [
    pytest.param(0, 5, [], id=f"below the lowest: {SPEC}"),
    pytest.param(0, 10, [(10, False)], id=f"at a threshold triggers: {SPEC}"),
    pytest.param(8, 8, [], id=f"equal to previous: {SPEC}"),
    pytest.param(8, 30, [(10, False), (30, False)], id=f"above two: {SPEC}"),
    pytest.param(31, 60, [(50, False)], id=f"only the new one: {SPEC}"),
    pytest.param(30, 29, [], id=f"going down crosses nothing: {SPEC}"),
    pytest.param(33, 351, [(50, False), (150, True), (250, True), (350, True)],
                 id=f"recurring past the highest fixed: {SPEC}"),
    pytest.param(150, 150, [], id="recurring already seen"),
    pytest.param(150, 250, [(250, True)], id="previous on a step: not again (Lago would)"),
    pytest.param(151, 250, [(250, True)], id="the next recurring step only"),
    pytest.param(20, 5, [], id="usage lowered (void, credit note): nothing"),
    pytest.param(5, 30, [(10, False), (30, False)],
                 id="usage back up after lowered: the same thresholds again (previous kept low)"),
])
def test_thresholds_crossed(previous: int, current: int, expected: list) -> None:
    assert _values(previous, current) == expected


def test_only_recurring() -> None:
    # alert_spec.rb: "when alert has only recurring thresholds"
    only = (Threshold("rec", Decimal(100), True),)
    assert _values(0, 150, only) == [(100, True)]
    assert _values(100, 350, only) == [(200, True), (300, True)]


def test_formatted_codes() -> None:
    crossed = thresholds_crossed(Decimal(0), Decimal(150), LAGO)
    assert [t.as_lago() for t in crossed] == [
        {"code": "t10", "value": "10", "recurring": False},
        {"code": "t30", "value": "30", "recurring": False},
        {"code": "t50", "value": "50", "recurring": False},
        {"code": "rec", "value": "150", "recurring": True},
    ]


@pytest.mark.parametrize(("body", "field"), [
    ({"alert_type": "billable_metric_lifetime_usage_units", "code": "a",
      "billable_metric_code": "m", "thresholds": [{"value": 1}]}, "alert_type"),
    ({"alert_type": "wallet_balance_amount", "code": "a", "thresholds": [{"value": 1}]},
     "alert_type"),
    ({"alert_type": "current_usage_amount", "code": "a", "thresholds": []}, "thresholds"),
    ({"alert_type": "current_usage_amount", "code": "a",
      "thresholds": [{"value": 1, "recurring": True}, {"value": 2, "recurring": True}]},
     "thresholds"),
    ({"alert_type": "billable_metric_current_usage_units", "code": "a",
      "thresholds": [{"value": 1}]}, "billable_metric"),
    ({"alert_type": "current_usage_amount", "code": "a", "billable_metric_code": "m",
      "thresholds": [{"value": 1}]}, "billable_metric"),
    ({"alert_type": "current_usage_amount", "code": "a", "direction": "decreasing",
      "thresholds": [{"value": 1}]}, "direction"),
    ({"alert_type": "current_usage_amount", "code": "a", "thresholds": [{"value": 1}],
      "wallet_code": "w"}, "wallet_code"),
])
def test_refused_by_name(body: dict, field: str) -> None:
    with pytest.raises(AlertError) as refused:
        check_alert(body)
    assert refused.value.field == field


def test_accepted() -> None:
    spec = check_alert({"alert_type": "billable_metric_current_usage_units", "code": "a",
                        "billable_metric_code": "tokens", "name": "N",
                        "thresholds": [{"code": "w", "value": "1.5"}]})
    assert spec.thresholds == (Threshold("w", Decimal("1.50000")),)
