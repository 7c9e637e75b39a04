"""The billing hour's change set: the subscriptions whose usage, catalog, lifecycle, wallets or
period may have changed since the last completed hour, kept durably (docs/architecture.md §24).

The hourly cycle's snapshot and wallet deductions look only at these subscriptions, so an hour
in which nothing changed costs a few indexed statements whatever the number of subscriptions.

- ``open_change_set`` takes the set of an hour in one transaction: under the fold lock held
  exclusively (no fold in flight, so every fold up to the watermark it reads has committed),
  it reads the last *completed* hour before this one (its base) and collects the members (the
  rules are ``_MEMBERS``); it stores them with the fold watermark and the time it was taken.
  A rerun of the hour unions what it collects with the members it stored before, so it
  recomputes at least that hour's set. An hour with no completed base, or one older than a
  set already taken (a backfill behind the present), is a *full* set: every subscription, as
  before this section existed.
- ``complete_change_set`` marks the hour completed once the whole cycle committed without a
  contained failure: the next hour's set starts from it. A crash, a failed unit or a retry
  leaves the base where it was, so the next set covers every change since it (the sets only
  grow: if in doubt, include).
- Each member's next boundary (its period's end, a future start or end of its life) is kept
  in ``change_set_bounds``; an hour at or past it brings the subscription in, by index.

A shard (issue 30, item 2) reads its slice with ``change_set_members(as_of, after, limit)``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.summaries import ChangeSetSummary
from tallyflow.models.rating.pricing import SubscriptionInfo
from tallyflow.tasks.folding import FOLD_LOCK, load_subscription_rows
from tallyflow.tasks.runs import transient_retries

# Changes stamped with a time (catalog rows, wallet postings, voids: ``now()``, the start of
# the transaction that wrote them) are read from the *oldest open transaction's start* when the
# base set was taken, not from the moment it was taken: a transaction that began before and
# committed after it stamped an earlier time, and must not be missed.
_CAPTURED = text(
    """
    select least(clock_timestamp(),
                 (select min(xact_start) from pg_stat_activity
                  where datname = current_database() and pid <> pg_backend_pid()))
    """
)

# Why a subscription is in the set (``reasons`` counts them; a member may have several).
_MEMBERS = text(
    """
    select distinct on (subscription_id, reason) subscription_id, reason from (
      -- new events folded (also late events, and a void's re-rating: a rebuild is a fold)
      select subscription_id, 'events' as reason from usage_marks where fold_id > :fold
      union all
      -- the catalog behind it: the subscription (a plan change, a termination), its customer,
      -- its plan; a charge or metric of its plan (a price change rates the open period)
      select s.id, 'catalog' from subscriptions s
        join plans p on p.id = s.plan_id join customers c on c.id = s.customer_id
      where s.updated_at >= :since or s.created_at >= :since or p.updated_at >= :since
         or c.updated_at >= :since
      union all
      select s.id, 'catalog' from subscriptions s
      where s.plan_id in (select ch.plan_id from charges ch
                          join billable_metrics m on m.id = ch.billable_metric_id
                          where ch.effective_from >= :since or ch.effective_to >= :since
                             or m.updated_at >= :since)
      union all
      -- voided events (their re-rating folds again too; this holds if it crashed before)
      select s.id, 'voids' from event_voids v
        join subscriptions s on s.external_id = v.external_subscription_id
      where v.created_at >= :since
      union all
      -- a wallet's change (a top-up, a settlement, an expiry, a new or changed wallet) may
      -- let usage unpaid so far be deducted: every subscription of the customer
      select s.id, 'wallets' from subscriptions s
      where s.customer_id in (
        select t.customer_id from wallet_transactions t
        where t.source <> 'usage'  -- the cycle's own deductions change no usage
          and (t.created_at >= :since or t.settled_at >= :since)
        union
        select w.customer_id from wallets w
        where w.updated_at >= :since or w.created_at >= :since)
      union all
      -- a period ends, a subscription starts or ends
      select subscription_id, 'boundary' from change_set_bounds where next_boundary <= :as_of
      union all
      -- a rerun of the hour: what its first run took
      select subscription_id, 'rerun' from change_set_members where as_of = :as_of
    ) m
    """
)


def capture_time(conn: Connection) -> datetime:
    """The time from which the next look for changes must read stamped rows: now, or the
    start of the oldest transaction open in this database (it may commit later)."""
    moment: datetime = conn.execute(_CAPTURED).scalar_one()
    return moment


@dataclass
class ChangeSet:
    """An hour's change set: ``full`` (every subscription) or its members' count and why."""

    as_of: datetime
    full: bool
    base_as_of: datetime | None = None
    subscriptions: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> ChangeSetSummary:
        return {
            "as_of": self.as_of.isoformat(),
            "full": self.full,
            "base_as_of": self.base_as_of.isoformat() if self.base_as_of else None,
            "subscriptions": self.subscriptions,
            "reasons": dict(self.reasons),
        }


def next_boundary(sub: SubscriptionInfo, at: datetime) -> datetime | None:
    """The first instant after ``at`` at which ``sub``'s period or life changes: its period's
    end while in force, its start if later, its end if later; None once it ended."""
    if sub.terminated_at is not None and sub.terminated_at < at:
        return None
    if sub.subscription_at > at:
        return sub.subscription_at
    ends = [sub.period_at(at).period_end]
    if sub.terminated_at is not None:
        ends.append(sub.terminated_at)
    return min(ends)


def _base(conn: Connection, as_of: datetime) -> tuple[bool, Any]:
    """(full, base row): full when no completed hour precedes ``as_of`` or a later set exists."""
    later = conn.execute(
        text("select 1 from change_sets where as_of > :h limit 1"), {"h": as_of}
    ).first()
    base = conn.execute(
        text(
            "select as_of, fold_watermark, captured_at from change_sets"
            " where as_of < :h and completed_at is not null order by as_of desc limit 1"
        ),
        {"h": as_of},
    ).first()
    return (later is not None or base is None), base


def _store_bounds(conn: Connection, subs: Sequence[SubscriptionInfo], at: datetime) -> None:
    if not subs:
        return
    conn.execute(
        text(
            """
        insert into change_set_bounds (subscription_id, next_boundary)
        select * from unnest(cast(:ids as bigint[]), cast(:bounds as timestamptz[]))
        on conflict (subscription_id) do update set next_boundary = excluded.next_boundary
        """
        ),
        {"ids": [s.id for s in subs], "bounds": [next_boundary(s, at) for s in subs]},
    )


def open_change_set(engine: Engine, as_of: datetime) -> ChangeSet:
    """Take (or, on a rerun, take again and widen) the change set of the hour ``as_of``."""
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
        fold = int(conn.execute(text("select coalesce(max(id), 0) from usage_folds")).scalar_one())
        captured = capture_time(conn)
        full, base = _base(conn, as_of)
        reasons: Counter[str] = Counter()
        if full:
            subs = load_subscription_rows(conn)
            members: set[int] = {s.id for s in subs}
        else:
            found = list(
                conn.execute(
                    _MEMBERS,
                    {
                        "fold": base.fold_watermark,
                        "since": base.captured_at,
                        "as_of": as_of,
                    },
                )
            )
            reasons.update(str(r.reason) for r in found)
            members = {int(r.subscription_id) for r in found}
            subs = load_subscription_rows(conn, ids=sorted(members)) if members else []
        conn.execute(
            text(
                """
            insert into change_sets (as_of, base_as_of, full_set, fold_watermark, captured_at,
                                     subscriptions, reasons)
            values (:h, :base, :full, :fold, :captured, :n, cast(:reasons as jsonb))
            on conflict (as_of) do update set base_as_of = excluded.base_as_of,
              full_set = excluded.full_set, fold_watermark = excluded.fold_watermark,
              captured_at = excluded.captured_at, subscriptions = excluded.subscriptions,
              reasons = excluded.reasons, completed_at = null
            """
            ),
            {
                "h": as_of,
                "base": None if full else base.as_of,
                "full": full,
                "fold": fold,
                "captured": captured,
                "n": len(members),
                "reasons": json.dumps(dict(sorted(reasons.items()))),
            },
        )
        if not full and members:
            conn.execute(
                text(
                    "insert into change_set_members (as_of, subscription_id)"
                    " select :h, unnest(cast(:ids as bigint[])) on conflict do nothing"
                ),
                {"h": as_of, "ids": sorted(members)},
            )
        _store_bounds(conn, subs, as_of)
    return ChangeSet(as_of, full, None if full else base.as_of, len(members), dict(reasons))


def complete_change_set(engine: Engine, as_of: datetime) -> None:
    """The hour's cycle committed everything: the next hour's set starts from this one."""
    with engine.begin() as conn:
        conn.execute(
            text("update change_sets set completed_at = now() where as_of = :h"), {"h": as_of}
        )


def change_set_members(
    conn: Connection, as_of: datetime, after: int = 0, limit: int | None = None
) -> list[int] | None:
    """The members of the hour's set in id order (a shard's slice: ids after ``after``, at
    most ``limit``); None for a full set or an hour without one (every subscription)."""
    full = conn.execute(
        text("select full_set from change_sets where as_of = :h"), {"h": as_of}
    ).scalar()
    if full is None or full:
        return None
    return [
        int(i)
        for i in conn.execute(
            text(
                "select subscription_id from change_set_members"
                " where as_of = :h and subscription_id > :a order by subscription_id limit :n"
            ),
            {"h": as_of, "a": after, "n": limit},
        ).scalars()
    ]


_RETRIES = transient_retries(retries=3, backoff_factor=1)


@task(name="open-change-set", **_RETRIES)
def open_change_set_task(as_of: datetime) -> ChangeSetSummary:
    return open_change_set(billing_engine(), as_of).as_dict()


@task(name="complete-change-set", **_RETRIES)
def complete_change_set_task(as_of: datetime) -> None:
    complete_change_set(billing_engine(), as_of)
