"""Flow ``ingest-events``: list new objects in a source, load each exactly once.

Orchestration only: which tasks, in what order, and what a person sees (progress while objects
finish, a table of per-object results, a run row with the totals). The work is in tasks/.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from prefect import runtime, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from tallyflow.flows.params import ObjectUrl, run_param
from tallyflow.flows.plain_params import flow
from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.summaries import (
    IngestRunSummary,
    IngestSummary,
    ReingestSummary,
    VoidRerate,
)
from tallyflow.tasks.ingest import (
    DEFAULT_CHUNK_ROWS,
    INGEST_RETRIES,
    ObjectResult,
    SourceSpec,
    as_spec,
    build_source,
    finish_run,
    ingest_object_task,
    ledger_spec,
    list_new_objects,
    other_settings,
    plan_replay,
    replayed,
    requeue,
    rerate_replay,
    source_parameter,
    start_run,
)
from tallyflow.tasks.runs import HOOKS, tracked

# The registered kinds as a discriminated union: the form offers a choice of source and that
# source's own typed options. Fixed when a deployment is registered (plugins installed then).
if TYPE_CHECKING:
    SourceForm = SourceSpec
else:
    SourceForm = source_parameter()

# Progress for whoever listens (the CLI draws a bar from it): one record per finished object
# on a plain logging channel, with ``result``, ``done`` and ``total`` attached, so the flow
# knows nothing of its listeners. Not propagated: without a handler it costs one check.
PROGRESS = logging.getLogger("tallyflow.progress.ingest")
PROGRESS.propagate = False


class IngestFailed(Exception):
    """Some objects could not be read; the others were ingested and they are retried next run."""

    def __init__(self, summary: IngestSummary) -> None:
        self.summary = summary
        super().__init__(
            f"{summary['failed_objects']} object(s) failed and will be retried by the next run; "
            f"{summary['objects']} ingested ({summary['accepted']} events accepted)"
        )


def _run_name() -> str:
    return f"ingest {run_param('source', 'url')}"


@flow(
    name="ingest-events",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
    log_prints=True,
    **HOOKS,
)
@tracked
def ingest_events(
    source: Annotated[SourceForm, Field(json_schema_extra={"title": "Source"})],
    chunk_rows: Annotated[
        int, Field(ge=1, json_schema_extra={"title": "Rows per chunk"})
    ] = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Ingest every new object of ``source`` exactly once; bad rows are kept with reasons.

    Args:
        source: Where the batch objects are (a folder, s3://bucket/prefix, ...), their format
            and record shape.
        chunk_rows: Rows read and loaded per step; bounds the memory of one object.
    """
    started = time.perf_counter()
    source = as_spec(source)
    built = build_source(source)
    run_id = start_run_task(built.key, str(runtime.flow_run.id or "") or None)
    object_ids = list_new_objects(source, run_id)
    return _load_objects(source, run_id, object_ids, chunk_rows, started,
                         other_settings_task(built.key, built.fingerprint,
                                             source.read_settings()))


def _load_objects(source: SourceSpec, run_id: int, object_ids: list[int], chunk_rows: int,
                  started: float, other_settings: int = 0) -> IngestSummary:
    """Load the run's objects in order, report, finish the run (both flows)."""
    progress = create_progress_artifact(
        0.0, description=f"{len(object_ids)} object(s) to ingest from {source.url}"
    )
    assert isinstance(progress, UUID)  # created synchronously: this flow is not async
    # Submitted in the run's load order (by URL); each object merges after those before it.
    futures = [
        ingest_object_task.submit(source, object_id, run_id, chunk_rows, after=object_ids[:i])
        for i, object_id in enumerate(object_ids)
    ]
    results: list[ObjectResult] = []
    for future in as_completed(futures):
        results.append(future.result())
        update_progress_artifact(progress, 100.0 * len(results) / max(len(futures), 1))
        PROGRESS.info("%s", results[-1].url, extra={
            "result": results[-1], "done": len(results), "total": len(futures)})
    if not futures:
        update_progress_artifact(progress, 100.0)
    results.sort(key=lambda r: r.object_id)
    failpoint("ingest.before_finish_run")
    summary: IngestSummary = {**finish_run_task(run_id, results, time.perf_counter() - started),
                              "other_settings": other_settings}
    if other_settings:
        print(f"{other_settings} object(s) were read with other settings (mapping file, "
              "options or format); `tallyflow reingest` replays them under these")
    _report(summary, results)
    if summary["failed_objects"]:
        raise IngestFailed(summary)
    return summary


@task(name="ingest-run-start", **INGEST_RETRIES)
def start_run_task(source_key: str, flow_run_id: str | None) -> int:
    """The run's history row; a task so a database that is briefly away is retried."""
    return start_run(billing_engine(), source_key, flow_run_id)


@task(name="other-settings", **INGEST_RETRIES)
def other_settings_task(source_key: str, fingerprint: str, spec: dict[str, Any]) -> int:
    return other_settings(billing_engine(), source_key, fingerprint, spec)


@task(name="ingest-run-finish", **INGEST_RETRIES)
def finish_run_task(
    run_id: int, results: list[ObjectResult], seconds: float
) -> IngestRunSummary:
    return finish_run(billing_engine(), run_id, results, seconds)


def _report(summary: IngestSummary, results: list[ObjectResult]) -> None:
    rows = [
        {
            "object": r.url,
            "status": r.status,
            "records": r.records,
            "emitted": r.records_emitted,
            "empty (no_usage)": r.records_empty,
            "events": r.events,
            "accepted": r.accepted,
            "duplicates": r.duplicates,
            "rejected": r.rejected,
            "unbillable": r.unbillable,
            "conflicts": r.conflicts,
            "seconds": round(r.seconds, 3),
            "error": r.error or "",
            "unmapped_usage_fields": ", ".join(
                f"{name} ({count})" for name, count in r.unmapped_usage_fields.items()),
            "paths_never_matched": ", ".join(r.paths_never_matched),
        }
        for r in results
        if r.status != "skipped"
    ]
    create_table_artifact(
        rows,
        key="ingest-objects",
        description=(
            f"Ingest run {summary['run_id']}: {summary['objects']} object(s), "
            f"{summary['records']} record(s) read = {summary['records_emitted']} emitted + "
            f"{summary['rejected']} rejected + {summary['records_empty']} empty (no_usage); "
            f"{summary['events']} event(s): {summary['accepted']} accepted, "
            f"{summary['duplicates']} duplicates, {summary['unbillable']} unbillable, "
            f"{summary['conflicts']} conflicting duplicates, "
            f"{summary['failed_objects']} failed"
            + (f"; usage fields no mapping knows: {', '.join(summary['unmapped_usage_fields'])}"
               if summary.get("unmapped_usage_fields") else "")
        ),
    )


def _reingest_name() -> str:
    return f"re-ingest {run_param('object_url')}"


@task(name="ledger-source", **INGEST_RETRIES)
def ledger_spec_task(object_url: str) -> dict[str, object] | None:
    return ledger_spec(billing_engine(), object_url)


@task(name="requeue-object", **INGEST_RETRIES)
def requeue_task(source_key: str) -> int:
    return requeue(billing_engine(), source_key)


@flow(name="reingest-object", flow_run_name=_reingest_name, log_prints=True, **HOOKS)
@tracked
def reingest_object(
    object_url: ObjectUrl,
    options: Annotated[
        dict[str, Any] | SkipJsonSchema[None], Field(json_schema_extra={"title": "Source options"})
    ] = None,
) -> ReingestSummary:
    """Read one object again, whatever the ledger says (its events still count once), with
    the source that read it last (kind, mapping, format and options, from the ledger).

    Args:
        object_url: The object as listed in the ledger, e.g. s3://bucket/usage/a.jsonl.
        options: Source options replacing the recorded ones (endpoint_url, ...); empty: keep.
    """
    recorded = ledger_spec_task(object_url) or {}
    spec = SourceSpec.model_validate(
        {**recorded, "url": object_url, "pattern": None,
         **({"options": options} if options else {})}
    )
    requeued = requeue_task(build_source(spec).key)
    summary = ingest_events(spec)
    return {**summary, "requeued": requeued}


@task(name="plan-replay", **INGEST_RETRIES)
def plan_replay_task(source: SourceSpec, actor: str, run_id: int, object_url: str | None,
                     since: datetime | None, until: datetime | None) -> list[int]:
    built = build_source(source)
    return plan_replay(billing_engine(), built.key, built.kind, source.ledger_spec(),
                       built.fingerprint, source.format, actor=actor, run_id=run_id,
                       url=object_url, since=since, until=until,
                       current={ref.url: ref.version for ref in built.list()})


@task(name="replayed-objects", **INGEST_RETRIES)
def replayed_task(source: SourceSpec, object_url: str | None) -> list[int]:
    built = build_source(source)
    return replayed(billing_engine(), built.key, built.fingerprint, url=object_url)


@task(name="rerate-replay", **INGEST_RETRIES)
def rerate_replay_task(object_ids: list[int]) -> VoidRerate:
    return rerate_replay(billing_engine(), object_ids).as_dict()


def _replay_name() -> str:
    return f"reingest {run_param('source', 'url')}"


@flow(name="reingest-source", flow_run_name=_replay_name, log_prints=True, **HOOKS)
@tracked
def reingest_source(
    source: Annotated[SourceForm, Field(json_schema_extra={"title": "Source"})],
    object_url: Annotated[
        str | SkipJsonSchema[None], Field(json_schema_extra={"title": "Only this object"})
    ] = None,
    since: Annotated[
        datetime | SkipJsonSchema[None], Field(json_schema_extra={"title": "Listed since"})
    ] = None,
    until: Annotated[
        datetime | SkipJsonSchema[None], Field(json_schema_extra={"title": "Listed until"})
    ] = None,
    actor: Annotated[str, Field(json_schema_extra={"title": "Who replays"})] = (
        "tallyflow reingest"),
    chunk_rows: Annotated[
        int, Field(ge=1, json_schema_extra={"title": "Rows per chunk"})
    ] = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Replay a source's ingested objects under the settings given here (they win over
    the recorded ones): each record's old events are voided and its new ones stored, where
    they differ; records on a finalized invoice are kept and listed (docs/ingest.md).

    Args:
        source: The source as it reads now (mapping, its options, format, options).
        object_url: Only this object; else every object listed in [since, until).
        since: Objects first listed at or after this moment.
        until: Objects first listed before this moment.
        actor: Who replays (named on each void).
        chunk_rows: Rows read and loaded per step.
    """
    started = time.perf_counter()
    source = as_spec(source)
    run_id = start_run_task(build_source(source).key, str(runtime.flow_run.id or "") or None)
    object_ids = plan_replay_task(source, actor, run_id, object_url, since, until)
    try:
        summary = _load_objects(source, run_id, object_ids, chunk_rows, started)
    finally:
        # every replay row of these settings, not only this run's: idempotent, and it finishes
        # the re-rating of a replay that crashed after its objects committed
        done = replayed_task(source, object_url)
        rerate = rerate_replay_task(done) if done else None
    summary.setdefault("replay", {"objects": 0, "records_unchanged": 0,
                                  "records_replaced": 0, "records_kept": 0,
                                  "events_voided": 0, "events_renamed": 0, "kept": []})
    summary["replay"]["rerate"] = rerate
    return summary


def on_dask(address: str | None = None, workers: int = 2) -> Any:
    """``ingest_events`` with its per-object tasks on a Dask cluster (prefect-dask).

    With ``address`` the tasks go to that scheduler; without, a local cluster of ``workers``
    processes is started for the run. Exactly once still rests on Postgres (each object is
    claimed with SKIP LOCKED in its own transaction), so any number of Dask workers is safe.
    """
    from prefect_dask import DaskTaskRunner

    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                            "processes": True, "dashboard_address": None})
    )
    # prefect-dask's runner is typed against another parameterisation of TaskRunner.
    return ingest_events.with_options(task_runner=runner)  # type: ignore[arg-type]
