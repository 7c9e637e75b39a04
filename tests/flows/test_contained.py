"""Contained failures are announced once per run: on its last attempt (a retried billing run
would otherwise announce the same unit three times), with the unit as the event's resource."""

from __future__ import annotations

import pytest
from prefect import flow

from tallyflow.flows.contained import contained_section, last_attempt
from tallyflow.tasks.runs.containment import MAX_EVENTS, contained_events, failure

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_only_the_last_attempt_of_a_retried_run_announces() -> None:
    seen: list[bool] = []

    @flow(retries=2, retry_delay_seconds=0)
    def flaky() -> None:
        seen.append(last_attempt())
        if len(seen) < 3:
            raise ValueError("again")

    flaky()
    assert seen == [False, False, True]

    @flow
    def once() -> bool:
        return last_attempt()

    assert once() is True


def test_events_name_the_unit_and_stop_at_a_summary() -> None:
    failures = [failure("usage-snapshot", "subscription", i, f"sub_{i}", "acme",
                        ValueError(f"bad {i}")) for i in range(MAX_EVENTS + 5)]
    failures.append(failure("close-periods", "customer", 1, "acme", "acme", "withheld",
                            withheld=True))
    events = contained_events(failures, "run-1")
    assert len(events) == MAX_EVENTS + 1
    first = events[0]
    assert first["event"] == "tallyflow.billing.contained-failure"
    assert first["resource"]["prefect.resource.id"] == "tallyflow.subscription.sub_0"
    assert first["resource"]["tallyflow.customer"] == "acme"
    assert first["payload"]["error"] == "bad 0" and first["payload"]["step"] == "usage-snapshot"
    assert first["related"] == [{"prefect.resource.id": "prefect.flow-run.run-1",
                                 "prefect.resource.role": "flow-run"}]
    assert events[-1]["payload"]["failed_units"] == MAX_EVENTS + 5  # withheld not counted
    section = contained_section(failures)
    assert "| usage-snapshot | subscription | sub_0 | acme | bad 0 |" in section
    assert "| close-periods | customer (withheld) | acme | acme | withheld |" in section
