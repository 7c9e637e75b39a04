"""What several commands share: reading a moment given on the command line, running flows."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import typer


def parse_moment(value: str | None) -> datetime | None:
    """ISO 8601 with an offset (``Z`` allowed) or epoch seconds; a zone-less time is refused
    because it would silently mean the machine's zone."""
    if value is None:
        return None
    text = value.strip()
    if text.lstrip("-").replace(".", "", 1).isdigit():
        seconds = Decimal(text)
        whole = int(seconds)
        return datetime.fromtimestamp(whole, UTC).replace(
            microsecond=int((seconds - whole) * 1_000_000)
        )
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO time or epoch seconds") from exc
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no timezone offset (add Z or +hh:mm)")
    return moment


@contextmanager
def flow_session() -> Iterator[None]:
    """What a command needs around the flows it runs: a Prefect API (the configured one, else
    Tallyflow's local server, started once and reused) and no per-run flow heartbeats, which
    cost each run about a second (Tallyflow keeps its own liveness heartbeat)."""
    from tallyflow.infra.prefect_server import use_api

    api_url = use_api(lambda line: typer.echo(line, err=True))
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    updates: dict = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if PREFECT_API_URL.value() != api_url:  # Prefect was imported before the URL was set
        updates[PREFECT_API_URL] = api_url
    from tallyflow.tasks.runs import CANCEL_LISTENERS

    CANCEL_LISTENERS.append(_say_cancelled)
    try:
        with temporary_settings(updates=updates):
            yield
    finally:
        CANCEL_LISTENERS.remove(_say_cancelled)


def _say_cancelled() -> None:
    typer.echo("cancelled: stopped by SIGTERM; the object being loaded was rolled back and the "
               "run is recorded as cancelled", err=True)


def start_up_done() -> None:
    """End of a command's start-up, for the commands ``main`` starts with the cycle collector
    off (``COLLECT_AFTER_START_UP``); a no-op when it is on (tests, other callers).

    Importing Prefect, SQLAlchemy, pydantic and the flows creates about a million objects that
    live as long as the process, and while they pile up the cycle collector walks all of them
    again and again, a good share of a small ingest's CPU, most of it in full collections
    (docs/scaling.md §6). Off during start-up, then ``gc.freeze`` sets what exists now aside (not
    scanned again, never collected: module-level objects, which live as long as the process
    anyway) and collecting resumes for what the run itself allocates.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def write_document(fetch: Callable[[], str | bytes | None], output: Path, missing: str) -> None:
    """Write an invoice's or a credit note's document (HTML text or PDF bytes) to ``output``;
    one line and exit 1 when it is not there (``missing``) or PDFs cannot be made here."""
    from tallyflow.tasks.invoicing import PdfUnavailable

    try:
        content = fetch()
    except PdfUnavailable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if content is None:
        typer.echo(missing, err=True)
        raise typer.Exit(1)
    if isinstance(content, str):
        output.write_text(content, encoding="utf-8")
    else:
        output.write_bytes(content)
    typer.echo(f"wrote {output}")
