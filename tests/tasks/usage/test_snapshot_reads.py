"""``usage_as_of`` reads only the snapshots that can be in force (docs/scaling.md §2): a bound
from the longest period of any plan, which must never drop a snapshot the unbounded read sees."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.usage import due_subscriptions, snapshot_subscriptions, usage_as_of
from tests.tasks.invoicing.test_invoicing import catalog, usage_events

_UNBOUNDED = text(
    """
    select count(*) as subscriptions, coalesce(sum(amount_cents), 0) as amount_cents
    from (select distinct on (subscription_id) amount_cents from usage_snapshots
          where as_of <= :h and period_start <= :h and period_end >= :h
          order by subscription_id, as_of desc) latest
    """
)


def _unbounded(engine: Engine, at: datetime) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(_UNBOUNDED, {"h": at}).one()
    return {"subscriptions": int(row.subscriptions), "amount_cents": int(row.amount_cents)}


def _snapshot(engine: Engine, at: datetime) -> None:
    fold_pending(engine)
    due = due_subscriptions(engine, at)
    assert due
    snapshot_subscriptions(engine, due, at)


SNAPPED = datetime(2025, 1, 10, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    ("interval", "at", "in_force"),
    [
        ("monthly", datetime(2025, 1, 31, 23, tzinfo=UTC), True),  # same period, 21 days on
        ("monthly", datetime(2025, 2, 1, 6, tzinfo=UTC), False),  # the next (New York) period
        ("yearly", datetime(2025, 11, 30, 23, tzinfo=UTC), True),  # 324 days on, same period
        ("yearly", datetime(2026, 1, 1, 6, tzinfo=UTC), False),
    ],
)
def test_the_bound_keeps_every_snapshot_in_force(
    engine: Engine, tmp_path: Path, interval: str, at: datetime, in_force: bool
) -> None:
    catalog(engine, tmp_path, plan={"interval": interval, "amount_cents": 0},
            start="2025-01-01T00:00:00Z", wallet=False)
    usage_events(engine, tmp_path, datetime(2025, 1, 10, 12, tzinfo=UTC))
    _snapshot(engine, SNAPPED)
    seen = usage_as_of(engine, at)
    assert seen == _unbounded(engine, at)
    assert seen["subscriptions"] == (1 if in_force else 0)
    assert (seen["amount_cents"] > 0) is in_force
