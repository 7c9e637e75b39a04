"""Scheduled runs named by their hour before they start.

Prefect's scheduler creates a deployment's runs ahead of time with a random name (``sassy-fox``)
and evaluates the flow's ``flow_run_name`` only when a run starts. So each billing run renames
the scheduled runs its deployment has queued (``billing 2026-11-27T10:00Z``): from the first
hourly run after a deploy on, every upcoming run is listed by its hour in the UI. The runs the
scheduler queued before that first run keep their random names until they start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import task

RENAMED_AT_MOST = 200  # the scheduler queues at most 100 runs per deployment ahead


def name_scheduled_runs(deployment_id: str,
                        name_of: Callable[[datetime, dict[str, Any]], str]) -> int:
    """Rename the deployment's Scheduled runs to ``name_of(scheduled time, parameters)``;
    returns how many were renamed (those already right are left alone)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    renamed = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
            limit=RENAMED_AT_MOST,
        )
        for run in runs:
            when = run.expected_start_time or (run.state.state_details.scheduled_time
                                               if run.state else None)
            if when is None:
                continue
            name = name_of(when, dict(run.parameters or {}))
            if run.name != name:
                client.update_flow_run(run.id, name=name)
                renamed += 1
    return renamed


@task(name="name-scheduled-runs")
def name_scheduled_runs_task(deployment_id: str,
                             name_of: Callable[[datetime, dict[str, Any]], str]) -> int:
    """Names are a convenience: a Prefect API that fails here never fails the billing run."""
    from prefect import get_run_logger

    try:
        return name_scheduled_runs(deployment_id, name_of)
    except Exception as exc:
        get_run_logger().warning("scheduled runs not renamed: %s", exc)
        return 0


__all__ = ["name_scheduled_runs", "name_scheduled_runs_task"]
