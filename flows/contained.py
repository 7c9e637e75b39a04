"""Telling people about contained failures: Prefect events and the artifact's section.

Orchestration only; what a contained failure is, and its event, live in
``tallyflow.tasks.runs.containment``. Events are emitted once per run, on its last attempt: a run
that Prefect retries as a whole (the billing cycle) would otherwise announce the same unit
three times in a few minutes. Standalone steps have no whole-run retries and emit at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import runtime
from prefect.context import FlowRunContext
from prefect.events import emit_event

from tallyflow.models.lago.summaries import ContainedFailure
from tallyflow.tasks.runs import LISTED, contained_events


def last_attempt() -> bool:
    """Whether this flow run will not be retried if it fails now."""
    context = FlowRunContext.get()
    retries = (context.flow.retries or 0) if context and context.flow else 0
    return int(runtime.flow_run.run_count or 1) > retries


def report_contained(failures: Sequence[ContainedFailure]) -> int:
    """Emit the events of these failures (on the run's last attempt); how many were sent."""
    if not failures or not last_attempt():
        return 0
    events = contained_events(failures, str(runtime.flow_run.id or "") or None)
    for event in events:
        emit_event(**event)
    return len(events)


def contained_section(failures: Sequence[ContainedFailure]) -> str:
    """The artifact's section: which unit failed in which step, and why."""
    if not failures:
        return ""
    lines = ["", "", "## Contained failures", "",
             f"{sum(not f['withheld'] for f in failures)} unit(s) failed alone; every other"
             " unit completed and committed. Fix the cause and rerun the hour (deployment"
             " `billing-cycle/hourly` with its `hour`), or wait for the next hour: it picks them"
             " up.", "",
             "| step | unit | id | customer | error |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {f['step']} | {f['unit']}{' (withheld)' if f['withheld'] else ''} |"
        f" {f['external_id'] or f['id']} | {f['customer'] or ''} |"
        f" {_cell(f['error'])} |"
        for f in failures[:LISTED]
    ]
    if len(failures) > LISTED:
        lines.append(f"\n... and {len(failures) - LISTED} more (`tallyflow runs --json`).")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
