"""Timestamps as Tallyflow writes them (docs/architecture.md §11).

Four forms exist on the wire today and each must stay as it is (§11 says why they differ);
they live here, side by side, so a new field picks one of them instead of a fifth.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

_SECONDS_Z = "%Y-%m-%dT%H:%M:%SZ"


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
def iso(moment: datetime | None) -> str | None:
    """Lago's document form, ``2026-11-27T10:00:00Z``: UTC, whole seconds (fees, invoices,
    customer usage). Microseconds are dropped, as Lago's serializers drop them."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime(_SECONDS_Z)


@overload
def iso_z(moment: datetime) -> str: ...
@overload
def iso_z(moment: None) -> None: ...
def iso_z(moment: datetime | None) -> str | None:
    """The HTTP API's read-only fields (``created_at``...): the stored moment as it was read,
    microseconds kept, a UTC offset written ``Z``. Not :func:`iso`: API clients already
    compare these values with what they stored, to the microsecond."""
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def iso_utc(moment: datetime) -> str:
    """Stored aggregation state (``usage_states``): UTC, ``+00:00``, microseconds kept. It is
    read back by ``datetime.fromisoformat`` and compared with rows already stored, so it
    never changes form."""
    return moment.astimezone(UTC).isoformat()


def iso_key(moment: datetime) -> str:
    """A moment inside an idempotency key (wallet ledger rows): UTC, always six decimals,
    ``Z``. Keys already written must be found again by a rerun (docs/architecture.md §3,
    invariant 4), so this form is frozen."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
