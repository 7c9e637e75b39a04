"""Flow ``usage-snapshot`` (hourly): fold new events, then snapshot the usage that changed.

Orchestration only. The window is the ``as_of`` parameter or the run's scheduled start time,
never "now" alone, so a rerun of 10:00 recomputes 10:00 (and replaces that hour's rows: they
are unique per subscription, period and as_of) wherever a row of 10:00 is missing or older than
the last fold or catalog change; a current row already is what it would compute. Passing
``subscriptions`` recomputes those whether or not anything changed, which is how one hour is
reproduced on demand.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from prefect import flow, runtime
from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tallyflow.flows.contained import report_contained
from tallyflow.flows.params import moment_label, resolve_as_of, run_param
from tallyflow.infra.failpoints import failpoint
from tallyflow.models.lago.summaries import UsageSnapshotSummary
from tallyflow.models.rating.unbillable import UnbillableReason
from tallyflow.tasks.runs import HOOKS, ContainedFailures, tracked
from tallyflow.tasks.subscriptions import final_snapshots_task
from tallyflow.tasks.usage import (
    SnapshotBatch,
    due_subscriptions_task,
    ensure_partitions_task,
    fold_new_objects_task,
    open_change_set_task,
    snapshot_task,
    usage_as_of_task,
)

DEFAULT_BATCH = 2_000
UNBILLABLE_REASONS = tuple(str(reason) for reason in UnbillableReason)


def _run_name() -> str:
    return f"usage snapshot {moment_label(run_param('as_of', default=None)) or 'scheduled'}"


@flow(
    name="usage-snapshot",
    flow_run_name=_run_name,
    # Batches are independent transactions on disjoint subscriptions, so two at a time overlap
    # one batch's SQL (the database's core) with the next one's pricing (Python's).
    # Prefect types TaskRunner's future parameter invariantly; a thread pool runner is one.
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
    log_prints=True,
    **HOOKS,
)
@tracked
def usage_snapshot(
    as_of: datetime | None = None,
    subscriptions: list[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    raise_contained: bool = True,
    change_set: bool = False,
) -> UsageSnapshotSummary:
    """Snapshot current usage of every subscription whose usage may have changed.

    A subscription that fails alone is contained (its batch's others commit) and listed in
    ``contained``; the run then ends Failed naming it, after every batch ran, unless
    ``raise_contained`` is off (the billing cycle, which goes on and fails at its end).

    ``change_set``: after the fold, take the hour's change set and look only at its members
    (docs/architecture.md §24); the billing cycle's deductions then read the same set.
    """
    if change_set and subscriptions is not None:
        raise ValueError("usage-snapshot: give either subscriptions or change_set, not both"
                         " (an explicit list is always recomputed)")
    moment = resolve_as_of(as_of)
    ensure_partitions_task(moment)  # the month's snapshot partition exists before its rows
    folded = fold_new_objects_task()
    failpoint("usage.after_fold")
    changes = open_change_set_task(moment) if change_set else None
    failpoint("usage.after_change_set")
    due = due_subscriptions_task(moment, subscriptions, moment if changes else None)
    flow_run_id = str(runtime.flow_run.id or "") or None
    futures = [
        snapshot_task.submit(due[start : start + batch_size], moment, due[start], flow_run_id)
        for start in range(0, len(due), batch_size)
    ]
    batches: list[SnapshotBatch] = [future.result() for future in futures]
    # Subscriptions that ended (a termination, ending_at) get their snapshot as of the end.
    finals = final_snapshots_task(moment)
    hour = usage_as_of_task(moment)
    contained = [f for b in batches for f in b.failed]
    # Events of the snapshotted periods that bill nothing (docs/data-quality.md,
    # "Unbillable events"), summed over this run's snapshots
    unbillable = {reason: sum(u["count"] for b in batches for u in b.unbillable
                              if u["reason"] == reason) for reason in UNBILLABLE_REASONS}
    summary: UsageSnapshotSummary = {
        "as_of": moment.isoformat(),
        "fold": folded,
        "subscriptions": len(due),
        "snapshots": sum(b.snapshots for b in batches),
        "amount_cents": sum(b.amount_cents for b in batches),
        "final_snapshots": finals,
        # The whole hour, recomputed or standing from an earlier snapshot (nothing changed).
        "subscriptions_as_of": hour["subscriptions"],
        "amount_cents_as_of": hour["amount_cents"],
        "not_a_number": unbillable["not_a_number"],
        "unpriced": unbillable["unpriced"],
        "contained": contained,
    }
    if changes is not None:
        summary["change_set"] = changes
    _report(summary, batches)
    if contained and raise_contained:
        report_contained(contained)
        raise ContainedFailures(contained, summary)
    return summary


def _report(summary: UsageSnapshotSummary, batches: list[SnapshotBatch]) -> None:
    top = sorted(
        (row for batch in batches for row in batch.top),
        key=lambda r: (-r["amount_cents"], r["subscription"]),
    )[:10]
    create_table_artifact(
        top,
        key="usage-snapshot-top",
        description=(
            f"Usage as of {summary['as_of']}: {summary['subscriptions_as_of']} subscription(s), "
            f"{summary['amount_cents_as_of']} cents; this run stored "
            f"{summary['snapshots']} snapshot(s) ({summary['amount_cents']} cents) and "
            f"folded {summary['fold']['events']} new event(s) from "
            f"{summary['fold']['objects']} object(s)"
        ),
    )
    per_charge: dict[str, int] = {}
    for batch in batches:
        for name, cents in batch.per_charge.items():
            per_charge[name] = per_charge.get(name, 0) + cents
    create_table_artifact(
        [{"charge": name, "amount_cents": cents} for name, cents in sorted(per_charge.items())],
        key="usage-snapshot-charges",
        description=f"Totals per charge for the snapshots as of {summary['as_of']}",
    )
    counts: Mapping[str, object] = summary
    unbillable = sorted(
        (row for batch in batches for row in batch.unbillable),
        key=lambda r: (r["subscription"], r["billable_metric_code"], r["reason"]),
    )
    create_table_artifact(
        [{**row, "sample_transaction_ids": ", ".join(row["sample_transaction_ids"])}
         for row in unbillable],
        key="usage-snapshot-unbillable",
        description=(
            f"Unbillable events in the snapshots as of {summary['as_of']}: "
            + ", ".join(f"{counts[r]} {r}" for r in UNBILLABLE_REASONS)
            + " (list them with `tallyflow rejects --unbillable`)"
        ),
    )
