"""Flow parameters as pydantic models, so the Prefect UI renders clear forms for people.

Parameters stay small (keys and times, never data): Prefect caps them at 512 KB and shows them
in every run's page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic.json_schema import SkipJsonSchema

MAX_BACKFILL_HOURS = 92 * 24


def resolve_as_of(as_of: datetime | None) -> datetime:
    """The moment a run is for: its parameter, else its scheduled start (a manual run is
    scheduled when it is created). Only outside any flow run does the clock stand in, so a
    rerun of 10:00 recomputes 10:00 (docs/architecture.md §3, invariant 5)."""
    from prefect import runtime

    if as_of is None:
        scheduled = runtime.flow_run.scheduled_start_time
        as_of = datetime.fromisoformat(scheduled.isoformat()) if scheduled else None
    if as_of is None:  # pragma: no cover - called outside a flow run
        as_of = datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError("as_of must carry a timezone offset")
    return as_of.astimezone(UTC)


# RFC 3339 with a mandatory offset: the Prefect server checks deployment parameters against
# their JSON schema when a run is created, so a zone-less time is refused at submit (the form
# shows the error) instead of failing at start. Pydantic re-checks it for callers from code.
TIME_WITH_OFFSET = (
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$"
)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("give a timezone offset, e.g. 2026-11-27T10:00:00Z")
    return value


def _aware_hour(value: datetime | None) -> datetime | None:
    aware = _aware(value)
    return aware.astimezone(UTC).replace(minute=0, second=0, microsecond=0) if aware else None


def _time_field(title: str) -> Any:
    """A form field for a moment: titled, offset required, no None toggle in the UI (empty
    means "when this run was scheduled"); Prefect takes descriptions from the docstring."""
    return Field(json_schema_extra={"title": title, "pattern": TIME_WITH_OFFSET})


# Flow parameters typed for the Prefect form. ``SkipJsonSchema[None]`` keeps None callable from
# code without offering a "None" choice in the form.
OptionalHour = Annotated[
    datetime | SkipJsonSchema[None], AfterValidator(_aware_hour), _time_field("Hour (UTC)")
]
OptionalMoment = Annotated[
    datetime | SkipJsonSchema[None], AfterValidator(_aware), _time_field("As of (UTC)")
]
StartHour = Annotated[datetime, AfterValidator(_aware_hour), _time_field("From (UTC)")]
HourCount = Annotated[
    int,
    Field(ge=1, le=MAX_BACKFILL_HOURS, json_schema_extra={"title": "Hours"}),
]
SubscriptionId = Annotated[
    str, Field(min_length=1, json_schema_extra={"title": "Subscription"})
]
ObjectUrl = Annotated[str, Field(min_length=3, json_schema_extra={"title": "Object URL"})]
# The bounds of one invoice-pdfs run (a run never takes hours; the next one goes on).
PdfCount = Annotated[int, Field(ge=1, le=1_000_000, json_schema_extra={"title": "At most PDFs"})]
PdfSeconds = Annotated[
    int, Field(ge=1, le=3600, json_schema_extra={"title": "At most seconds"})
]
PdfChunkSize = Annotated[
    int, Field(ge=1, le=500, json_schema_extra={"title": "PDFs per transaction"})
]


def run_param(name: str, field: str | None = None, default: Any = "") -> Any:
    """A parameter of the current flow run (or one field of it), for run names.

    Parameters arrive as models when a flow is called from code and as plain dicts when a
    deployment runs it, so both shapes are read the same way here.
    """
    from prefect import runtime

    value = (runtime.flow_run.parameters or {}).get(name)
    if field is not None:
        value = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
    return default if value is None else value


def hour_label(hour: datetime) -> str:
    """The one way an hour is written in run names and artifacts: ``2026-11-27T10:00Z``."""
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def moment_label(value: Any) -> str | None:
    """A run parameter (datetime or ISO text, as deployments pass it) as ``hour_label``; None
    when absent. Unparseable text is shown as given, so a run name never fails."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return hour_label(value) if value.minute == value.second == 0 and not value.microsecond \
            else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def backfill_hours(start: datetime, hours: int) -> list[datetime]:
    return [start + timedelta(hours=n) for n in range(hours)]
