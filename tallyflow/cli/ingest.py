"""``tallyflow ingest`` and ``tallyflow rejects``: load event batches and deal with bad rows."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tallyflow.cli.common import flow_session, start_up_done
from tallyflow.errors import UserError
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.results import PluginOption, SourceRegistry
from tallyflow.models.lago.summaries import IngestSummary

# The choices the flow's parameter model accepts, spelled out so a typo fails before any run
# (kept equal to tasks.sources by a test; importing it here would slow every command). Source
# kinds and mappings come from the registry (plugins included) when the command runs.
FORMAT_CHOICES = ("auto", "jsonl", "json", "csv", "parquet")

SUMMARY_KEYS = (
    "objects",
    "records",
    "records_emitted",
    "records_empty",
    "events",
    "accepted",
    "duplicates",
    "conflicts",
    "rejected",
    "unbillable",
    "failed_objects",
)


def run_ingest(
    url: str,
    pattern: str | None = None,
    fmt: str = "auto",
    mapping: str = "lago",
    options: dict[str, Any] | None = None,
    progress: bool = True,
    dask_workers: int = 0,
    dask_address: str | None = None,
    kind: str = "fsspec",
    mapping_options: dict[str, Any] | None = None,
) -> tuple[IngestSummary, bool]:
    """Run the ingest flow in this process (objects on a Dask cluster if asked); returns
    (summary, ok)."""
    from tallyflow.tasks.ingest import SourceSpec

    spec = SourceSpec(kind=kind, url=url, pattern=pattern, format=fmt, mapping=mapping,
                      mapping_options=mapping_options or {}, options=options or {})
    with flow_session():
        return _run_ingest(spec, progress, dask_workers, dask_address)


def _run_ingest(
    spec: Any,
    progress: bool,
    dask_workers: int,
    dask_address: str | None,
) -> tuple[IngestSummary, bool]:
    from tallyflow.flows.ingest import PROGRESS, IngestFailed, ingest_events, on_dask

    start_up_done()  # everything the run needs is imported
    bar = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("objects"),
        TextColumn("{task.fields[events]} events"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
        transient=True,
    )
    task_id = bar.add_task("ingest", total=None, events=0)
    accepted = 0

    class Bar(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal accepted
            accepted += record.result.accepted  # type: ignore[attr-defined]
            bar.update(task_id, completed=record.done,  # type: ignore[attr-defined]
                       total=record.total, events=accepted)  # type: ignore[attr-defined]

    handler = Bar(logging.INFO)
    PROGRESS.addHandler(handler)
    PROGRESS.setLevel(logging.INFO)
    try:
        with bar:
            flow = (
                on_dask(dask_address, dask_workers or 2)
                if dask_workers or dask_address
                else ingest_events
            )
            state = flow(spec, return_state=True)
    finally:
        PROGRESS.removeHandler(handler)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, IngestFailed):
        return outcome.summary, False
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome, True


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("reingest")(reingest)
    app.add_typer(rejects_app, name="rejects")
    app.add_typer(sources_app, name="sources")
    app.add_typer(mappings_app, name="mappings")


def parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, object]:
    """``key=value`` options; a value that looks like JSON ({..}, [..]) is read as JSON, the
    rest stays text for the option model to convert (so "true", "65536" work)."""
    found: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {pair!r} is not key=value", f"e.g. {flag} endpoint_url=http"
                            "://minio:9000", exit_code=2)
        if value.startswith(("{", "[")):
            try:
                found[key.strip()] = json.loads(value)
                continue
            except ValueError:
                pass
        found[key.strip()] = value
    return found


def ingest(
    url: str = typer.Argument(..., help="file:///folder, s3://bucket/prefix, memory://x, ..."),
    pattern: str | None = typer.Option(
        None, "--pattern", help="Glob below the URL, e.g. '*.jsonl'"
    ),
    fmt: str = typer.Option("auto", "--format", help="|".join(FORMAT_CHOICES)),
    mapping: str = typer.Option(
        "lago", "--mapping",
        help="Record mapping: a name from `tallyflow sources list`, or a .yaml/.json file.",
    ),
    kind: str = typer.Option(
        "fsspec", "--source", help="Source kind (see `tallyflow sources list`)."
    ),
    option: list[str] | None = typer.Option(
        None, "--option", "-o", help="A source option, key=value (repeat)."
    ),
    mapping_option: list[str] | None = typer.Option(
        None, "--mapping-option", help="A mapping option, key=value (repeat), e.g. code=llm_tokens"
    ),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint"),
    secret_block: str | None = typer.Option(
        None, "--secret-block", help="Prefect Secret block with S3 credentials"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    dask_workers: int = typer.Option(
        0, "--dask-workers", min=0, help="Read objects on a local Dask cluster of N processes."
    ),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="Read objects on this Dask scheduler (tcp://host:8786)."
    ),
) -> None:
    """Ingest every new object under URL exactly once; bad rows are kept with reasons."""
    url, mapping, options, mapping_options = _checked(
        url, pattern, fmt, mapping, kind, option, mapping_option, endpoint_url, secret_block)
    summary, ok = run_ingest(
        url, pattern, fmt, mapping, options, progress=not as_json,
        dask_workers=dask_workers, dask_address=dask_address, kind=kind,
        mapping_options=mapping_options,
    )
    _print_summary(url, summary, ok, as_json)


def _checked(
    url: str, pattern: str | None, fmt: str, mapping: str, kind: str,
    option: list[str] | None, mapping_option: list[str] | None, endpoint_url: str | None,
    secret_block: str | None,
) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """The source as asked, checked before any run: (url, mapping, options, mapping options)."""
    from tallyflow.tasks.ingest import SourceSpec, build_source, is_mapping_file, plugins

    registry = plugins.registry()
    mapping_is_file = is_mapping_file(mapping) and mapping not in registry.mappings
    for value, choices, flag in ((fmt, FORMAT_CHOICES, "--format"),
                                 (mapping, () if mapping_is_file else
                                  tuple(sorted(registry.mappings)), "--mapping"),
                                 (kind, tuple(sorted(registry.sources)), "--source")):
        if choices and value not in choices:
            hint = f"choose one of: {', '.join(choices)}"
            if flag == "--mapping":
                hint += ", or a .yaml/.json mapping file"
            raise UserError(f"unknown {flag} {value!r}", hint, exit_code=2)
    if mapping_is_file:
        mapping = str(Path(mapping).resolve())
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    options = parse_pairs(option, "--option")
    options.update(
        {k: v for k, v in (("endpoint_url", endpoint_url), ("secret_block", secret_block)) if v}
    )
    mapping_options = parse_pairs(mapping_option, "--mapping-option")
    # Every option is checked against the source's and the mapping's models before any run.
    build_source(SourceSpec(kind=kind, url=url, pattern=pattern, format=fmt, mapping=mapping,
                            mapping_options=mapping_options, options=options))
    return url, mapping, options, mapping_options


def _print_summary(url: str, summary: Mapping[str, Any], ok: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {k: summary.get(k, 0) for k in SUMMARY_KEYS}
                | {
                    "run_id": summary.get("run_id"),
                    "status": summary.get("status"),
                    "seconds": summary.get("seconds"),
                    "unmapped_usage_fields": summary.get("unmapped_usage_fields", {}),
                    "paths_never_matched": summary.get("paths_never_matched", {}),
                    "other_settings": summary.get("other_settings", 0),
                }
                | ({"replay": summary["replay"]} if "replay" in summary else {}),
                default=str,
            )
        )
    else:
        console = Console()
        table = Table(title=f"ingest {url}", show_header=True)
        for key in SUMMARY_KEYS:
            table.add_column(key, justify="right")
        table.add_row(*(str(summary.get(k, 0)) for k in SUMMARY_KEYS))
        console.print(table)
        if summary.get("rejected"):
            console.print("See the rejected rows with [bold]tallyflow rejects[/bold].")
        if summary.get("records_empty"):
            console.print(f"{summary['records_empty']} record(s) gave no event (no_usage): "
                          "no count at the mapping's paths (see docs/data-quality.md).")
        unmapped = summary.get("unmapped_usage_fields") or {}
        if unmapped:
            console.print(
                "[yellow]Usage fields the mapping does not know (billed what it knows; "
                "docs/llm-usage.md):[/yellow] "
                + ", ".join(f"{name} ({count} records)" for name, count in unmapped.items()),
                markup=True, highlight=False,
            )
        never = summary.get("paths_never_matched") or {}
        if never:
            console.print(
                "[yellow]Mapping paths no record matched:[/yellow] "
                + ", ".join(f"{path} ({count} objects)" for path, count in never.items()),
                markup=True, highlight=False,
            )
        if summary.get("other_settings"):
            console.print(
                f"[yellow]{summary['other_settings']} object(s) were read with other settings"
                "[/yellow] (mapping file, mapping options or format): `tallyflow reingest` "
                "with these settings replays them (docs/ingest.md, Fix and replay).",
                markup=True, highlight=False)
        if "replay" in summary:
            _print_replay(summary["replay"], console)
        if not ok:
            console.print("[red]Some objects could not be read; the next run retries them.[/red]")
    if not ok:
        raise typer.Exit(1)


def _print_replay(replay: dict[str, Any], console: Console) -> None:
    console.print(
        f"replayed {replay['objects']} object(s): {replay['records_unchanged']} record(s) "
        f"unchanged, {replay['records_replaced']} replaced ({replay['events_voided']} old "
        f"event(s) voided), {replay['records_kept']} kept", highlight=False)
    for kept in replay.get("kept", []):
        console.print(f"  kept (a credit note corrects it): row {kept['row']} "
                      f"{kept['external_subscription_id']}/{kept['transaction_id']}: "
                      f"{kept['refused']}", highlight=False)
    rerate = replay.get("rerate") or {}
    if rerate.get("snapshots"):
        console.print(f"re-rated: {rerate['snapshots']} snapshot(s), "
                      f"{rerate['wallet_corrections']} wallet correction(s)", highlight=False)


def reingest(
    url: str = typer.Argument(..., help="The source's URL, as `tallyflow ingest` was given it"),
    pattern: str | None = typer.Option(None, "--pattern", help="Glob below the URL"),
    fmt: str = typer.Option("auto", "--format", help="|".join(FORMAT_CHOICES)),
    mapping: str = typer.Option("lago", "--mapping", help="The record mapping (name or file)."),
    kind: str = typer.Option("fsspec", "--source", help="Source kind."),
    option: list[str] | None = typer.Option(None, "--option", "-o", help="key=value (repeat)"),
    mapping_option: list[str] | None = typer.Option(
        None, "--mapping-option", help="A mapping option, key=value (repeat)"),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3 endpoint"),
    secret_block: str | None = typer.Option(None, "--secret-block", help="Secret block"),
    object_url: str | None = typer.Option(None, "--object", help="Only this object."),
    since: datetime | None = typer.Option(None, "--since", help="Objects listed from T."),
    until: datetime | None = typer.Option(None, "--until", help="Objects listed before T."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Replay a source's ingested objects under these settings: what changed is voided and
    stored anew (periods on a finalized invoice are kept and listed)."""
    import getpass

    from tallyflow.tasks.ingest import SourceSpec

    if object_url and (since or until):
        raise UserError("--object and --since/--until choose objects two ways",
                        "give one object, or a window", exit_code=2)
    for moment, flag in ((since, "--since"), (until, "--until")):
        if moment is not None and moment.tzinfo is None:
            raise UserError(f"{flag} {moment.isoformat()} has no timezone",
                            "give an offset, e.g. 2026-11-27T10:00:00Z", exit_code=2)
    url, mapping, options, mapping_options = _checked(
        url, pattern, fmt, mapping, kind, option, mapping_option, endpoint_url, secret_block)
    if object_url and "://" not in object_url:
        object_url = Path(object_url).resolve().as_uri()
    spec = SourceSpec(kind=kind, url=url, pattern=pattern, format=fmt, mapping=mapping,
                      mapping_options=mapping_options, options=options)
    with flow_session():
        from tallyflow.flows.ingest import IngestFailed, reingest_source

        start_up_done()
        state = reingest_source(spec, object_url, since, until, getpass.getuser(),
                                return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, IngestFailed):
        _print_summary(url, outcome.summary, False, as_json)
        return
    if isinstance(outcome, BaseException):
        raise outcome
    _print_summary(url, outcome, True, as_json)


rejects_app = typer.Typer(help="Rejected rows: list, export for fixing.")


@rejects_app.callback(invoke_without_command=True)
def rejects(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, "--reason", help="Only this reason code."),
    object_contains: str | None = typer.Option(None, "--object", help="Object URL contains."),
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
    unbillable: bool = typer.Option(
        False, "--unbillable",
        help="Instead: events stored but billing nothing (not_a_number, unpriced), per"
        " subscription period and metric, as of the latest usage snapshot.",
    ),
    subscription: str | None = typer.Option(
        None, "--subscription", help="With --unbillable: only this external subscription id."
    ),
) -> None:
    """List open rejected rows with the object, row, field and reason."""
    if ctx.invoked_subcommand is not None:
        return
    if subscription is not None and not unbillable:
        raise UserError("--subscription lists unbillable events", "add --unbillable",
                        exit_code=2)
    if unbillable:
        if object_contains is not None:
            raise UserError("--object does not apply to unbillable events",
                            "they are counted per subscription: use --subscription",
                            exit_code=2)
        _print_unbillable(subscription, reason, limit, as_json)
        return
    from tallyflow.tasks.ingest import count_by_reason, count_unbillable, list_rejects

    engine = billing_engine()
    rows = list_rejects(engine, reason, object_contains, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    console = Console()
    counts = count_by_reason(engine)
    table = Table(
        title=f"open rejected rows: {sum(counts.values())} "
        f"({', '.join(f'{k} {v}' for k, v in counts.items()) or 'none'})"
    )
    for column in ("object", "row", "field", "reason", "message"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["object"], str(row["row_number"]), row["field"] or "", row["reason"], row["message"]
        )
    console.print(table)
    billing_nothing = count_unbillable(engine)
    if billing_nothing:
        console.print(f"Also stored but billing nothing: "
                      f"{', '.join(f'{n} {reason}' for reason, n in billing_nothing.items())};"
                      " see [bold]tallyflow rejects --unbillable[/bold].")


def _print_unbillable(subscription: str | None, reason: str | None, limit: int,
                      as_json: bool) -> None:
    from tallyflow.tasks.ingest import list_unbillable

    rows = list_unbillable(billing_engine(), subscription, reason, limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    table = Table(title=f"unbillable events (stored, billing nothing): {len(rows)} row(s), as"
                  " of each period's latest usage snapshot")
    for column in ("subscription", "period", "metric", "reason", "count", "sample ids"):
        table.add_column(column, overflow="fold", justify="right" if column == "count"
                         else "left")
    for row in rows:
        table.add_row(row["subscription"], row["period_start"].date().isoformat(),
                      row["metric"], row["reason"], str(row["count"]),
                      ", ".join(row["sample_transaction_ids"]))
    Console().print(table)


@rejects_app.command("export")
def export(
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default stdout)."),
    reason: str | None = typer.Option(None, "--reason"),
    object_contains: str | None = typer.Option(None, "--object"),
    mark: bool = typer.Option(
        False, "--mark-exported", help="Mark the exported rows so `rejects` no longer lists them."
    ),
) -> None:
    """Write open rejected rows as JSON Lines ({object, row_number, reason, message, raw}).

    Fix the `raw` records, save them as a .jsonl object in the bucket, and ingest again.
    """
    from tallyflow.tasks.ingest import iter_rejects, mark_exported

    engine = billing_engine()
    stream = output.open("w", encoding="utf-8") if output else sys.stdout
    ids: list[int] = []
    try:
        for row in iter_rejects(engine, reason, object_contains):
            ids.append(row["id"])
            stream.write(
                json.dumps(
                    {
                        k: row[k]
                        for k in ("object", "row_number", "field", "reason", "message", "raw")
                    },
                    default=str,
                )
                + "\n"
            )
    finally:
        if output:
            stream.close()
    if mark and ids:
        mark_exported(engine, ids)
    if output:
        typer.echo(f"{len(ids)} rejected row(s) written to {output}", err=True)


sources_app = typer.Typer(help="Source kinds and record mappings (built-in and plugins).")


def _option_rows(model: type[Any]) -> list[PluginOption]:
    rows: list[PluginOption] = []
    for name, field in model.model_fields.items():
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        rows.append({
            "name": name,
            "type": annotation.replace("typing.", ""),
            "default": (None if field.is_required()
                        else field.get_default(call_default_factory=True)),
            "required": field.is_required(),
            "description": field.description or "",
        })
    return rows


def describe_registry() -> SourceRegistry:
    """What ``tallyflow sources list`` shows: kinds, mappings, their options, broken plugins."""
    from tallyflow.tasks.ingest import plugins

    registry = plugins.registry()
    return {
        "sources": [
            {"kind": kind, "origin": registry.origin[f"source:{kind}"],
             "description": cls.description or (cls.__doc__ or "").strip().splitlines()[0],
             "fields": ["url", *cls.spec_fields], "options": _option_rows(cls.Config)}
            for kind, cls in sorted(registry.sources.items())
        ],
        "mappings": [
            {"name": name, "origin": registry.origin[f"mapping:{name}"],
             "description": mapping.description, "options": _option_rows(mapping.Options)}
            for name, mapping in sorted(registry.mappings.items())
        ],
        "broken": [
            {"group": b.group, "name": b.name, "target": b.target, "error": b.error}
            for b in registry.broken
        ],
    }


@sources_app.command("list")
def sources_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Source kinds and mappings you can ingest with, with their options; broken plugins."""
    import warnings

    from tallyflow.tasks.ingest import PluginWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # listed below instead
        described = describe_registry()
    if as_json:
        typer.echo(json.dumps(described, default=str))
        return
    console = Console()
    table = Table(title="source kinds (--source, --option key=value)", show_lines=True)
    for column in ("kind", "from", "description", "options"):
        table.add_column(column, overflow="fold")
    for source in described["sources"]:
        table.add_row(source["kind"], source["origin"], source["description"],
                      "\n".join(_option_text(o) for o in source["options"]) or "-")
    console.print(table)
    table = Table(title="mappings (--mapping NAME or FILE, --mapping-option key=value)",
                  show_lines=True)
    for column in ("mapping", "from", "description", "options"):
        table.add_column(column, overflow="fold")
    for mapping in described["mappings"]:
        table.add_row(mapping["name"], mapping["origin"], mapping["description"],
                      "\n".join(_option_text(o) for o in mapping["options"]) or "-")
    console.print(table)
    for broken in described["broken"]:
        console.print(f"[red]broken plugin[/red] {broken['name']} ({broken['group']}, "
                      f"{broken['target']}): {broken['error']}")


def _option_text(option: PluginOption) -> str:
    default = "required" if option["required"] else f"default {option['default']!r}"
    return f"{option['name']} ({default}): {option['description']}".rstrip(": ")


mappings_app = typer.Typer(help="Record mappings: try one on an object.")


@mappings_app.command("preview")
def mappings_preview(
    mapping: str = typer.Argument(..., help="A mapping file (.yaml/.json) or a mapping's name"),
    obj: str = typer.Argument(..., metavar="OBJECT", help="A local file or an object URL"),
    rows: int = typer.Option(20, "--rows", min=1, help="Read at most this many records."),
    mapping_option: list[str] | None = typer.Option(
        None, "--mapping-option", help="A mapping option, key=value (repeat), e.g. timezone=UTC"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the preview as one JSON object."),
) -> None:
    """The events a mapping would give for the first records of OBJECT, and the records it
    would reject; nothing is written."""
    from dataclasses import asdict

    from tallyflow.tasks.ingest import preview

    if Path(mapping).suffix.lower() in (".yaml", ".yml", ".json") and Path(mapping).exists():
        mapping = str(Path(mapping).resolve())
    try:
        found = preview(mapping, obj, rows, parse_pairs(mapping_option, "--mapping-option"))
    except FileNotFoundError:  # a bad mapping file or source is a UserError already
        raise UserError(f"no object {obj!r}", "give a file path or an object URL") from None
    if as_json:
        typer.echo(json.dumps(asdict(found), default=str))
        return
    for event in found.events:
        typer.echo(json.dumps(event, default=str))
    console = Console(stderr=True)
    for reject in found.rejects:
        console.print(f"row {reject['row']} rejected ({reject['reason']}, "
                      f"{reject['field']}): {reject['message']}", markup=False, highlight=False)
    console.print(f"{found.records} record(s) read: {len(found.events)} event(s), "
                  f"{len(found.rejects)} rejected; nothing written", highlight=False)
    if found.unmapped_usage_fields:
        console.print("usage fields the mapping does not know: "
                      + ", ".join(found.unmapped_usage_fields), markup=False, highlight=False)
    if found.paths_never_matched:
        console.print("paths no record matched: " + ", ".join(found.paths_never_matched),
                      markup=False, highlight=False)
