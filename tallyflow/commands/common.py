"""What several commands share: reading a moment given on the command line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

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
