"""Reads of stored snapshots: the hourly report of an hour and a subscription's latest usage.

Apart from ``tasks/usage/rating.py`` (which computes and writes snapshots) because these only
read the
snapshot history, whose size is what the partitions and the bound below keep cheap
(docs/scaling.md §2).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, text

from tallyflow.models.rating.periods import longest_period
from tallyflow.tasks.folding import in_force, load_subscription_rows, loads_exact

_PLAN_INTERVALS = text(
    "select interval from plans union select document->>'interval' from plan_versions")
_NO_BOUND = datetime(1, 1, 1, tzinfo=UTC)


def usage_as_of(engine: Engine, as_of: datetime) -> dict[str, int]:
    """What the snapshots say about hour ``as_of``: every subscription with a snapshot for the
    period containing it, each at its latest snapshot taken as of that hour or before (one not
    recomputed by this run still stands: nothing changed since), and the total amount."""
    with engine.connect() as conn:
        # a snapshot lies inside its period, so none older than the longest period of any plan
        # (version) can be in force at ``as_of``: the scan reads one or two monthly partitions
        span = longest_period(conn.execute(_PLAN_INTERVALS).scalars())
        row = conn.execute(
            text(
                """
                select count(*) as subscriptions, coalesce(sum(amount_cents), 0) as amount_cents
                from (
                  select distinct on (subscription_id) amount_cents
                  from usage_snapshots
                  where as_of <= :h and as_of >= :low
                    and period_start <= :h and period_end >= :h
                  order by subscription_id, as_of desc
                ) latest
                """
            ),
            {"h": as_of, "low": as_of - span if span is not None else _NO_BOUND},
        ).one()
    return {"subscriptions": int(row.subscriptions), "amount_cents": int(row.amount_cents)}


def latest_usage(
    engine: Engine, external_subscription_id: str, at: datetime
) -> dict[str, object] | None:
    """The latest stored snapshot for the period containing ``at`` (None when none yet).

    For the wallet flow: ``amount_cents`` is what usage says is owed for that period as of
    ``as_of``; ``usage`` is the Lago ``customer_usage`` object stored with it.
    """
    with engine.connect() as conn:
        sub = in_force(load_subscription_rows(conn, [external_subscription_id]), at)
        if sub is None:
            raise LookupError(f"unknown subscription {external_subscription_id!r}")
        period = sub.period_at(at)
        row = (
            conn.execute(
                text(
                    """
                    select id, external_subscription_id, period_start, period_end, as_of,
                           fold_watermark, currency, amount_cents, precise_amount_cents,
                           events_count, usage::text as usage
                    from usage_snapshots
                    where subscription_id = :sid and period_start = :ps and as_of >= :ps
                    order by as_of desc limit 1
                    """
                ),
                {"sid": sub.id, "ps": period.period_start},
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    out = dict(row)
    out["amount_cents"] = int(out["amount_cents"])
    out["usage"] = loads_exact(out["usage"])
    return out
