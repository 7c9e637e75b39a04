"""Flow parameters as pydantic models, so the Prefect UI renders clear forms for people.

Parameters stay small (keys and times, never data): Prefect caps them at 512 KB and shows them
in every run's page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

MAX_BACKFILL = timedelta(days=92)


def resolve_as_of(as_of: datetime | None) -> datetime:
    """The moment a run is for: its parameter, else its scheduled start (a manual run is
    scheduled when it is created). Only outside any flow run does the clock stand in, so a
    rerun of 10:00 recomputes 10:00 (design invariant 5)."""
    from prefect import runtime

    if as_of is None:
        scheduled = runtime.flow_run.scheduled_start_time
        as_of = datetime.fromisoformat(scheduled.isoformat()) if scheduled else None
    if as_of is None:  # pragma: no cover - called outside a flow run
        as_of = datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError("as_of must carry a timezone offset")
    return as_of.astimezone(UTC)


def _aware_hour(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a timezone offset, e.g. 2026-11-27T10:00:00Z")
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


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
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class BillingHour(BaseModel):
    """One hour of the billing cycle to (re)compute."""

    hour: datetime = Field(
        ...,
        title="Hour (UTC)",
        description="The hour to bill, e.g. 2026-11-27T10:00:00Z. Usage and wallet deductions are "
        "computed as of the start of this hour; rerunning it recomputes exactly that.",
    )

    _hour = field_validator("hour")(_aware_hour)


class BackfillWindow(BaseModel):
    """Hours to run the billing cycle for, one after another."""

    start: datetime = Field(..., title="From (UTC)", description="First hour, inclusive.")
    end: datetime = Field(..., title="To (UTC)", description="Last hour, inclusive.")

    _start = field_validator("start")(_aware_hour)
    _end = field_validator("end")(_aware_hour)

    @model_validator(mode="after")
    def _ordered(self) -> BackfillWindow:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if self.end - self.start > MAX_BACKFILL:
            raise ValueError(f"a backfill covers at most {MAX_BACKFILL.days} days")
        return self

    def hours(self) -> list[datetime]:
        count = int((self.end - self.start) / timedelta(hours=1)) + 1
        return [self.start + timedelta(hours=n) for n in range(count)]


class Rerate(BaseModel):
    """Re-price one subscription's open period, e.g. after a price change."""

    external_subscription_id: str = Field(
        ..., title="Subscription", description="The subscription's external_id.", min_length=1
    )
    at: datetime | None = Field(
        None, title="As of (UTC)", description="Empty: the time this run was scheduled."
    )


class Reingest(BaseModel):
    """Read one object again (after fixing it, or to check it)."""

    object_url: str = Field(
        ..., title="Object URL", description="As listed in the ledger, e.g. s3://bucket/a.jsonl",
        min_length=3,
    )
