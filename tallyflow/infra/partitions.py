"""Monthly partitions of ``usage_snapshots``, made ahead of need (docs/scaling.md §2).

Why: the hourly snapshot adds one row per changed subscription per hour (72M a month at
100,000 subscriptions), and it is the one table of the hourly path that grows with time.
Partitioned by month of ``as_of`` (migration 0015), a month of history is one table that
``tallyflow archive`` can replace whole instead of deleting row by row, and the hourly upsert
and its reads touch the current month's indexes, not a year of them.

Maintenance is automatic and idempotent: every usage snapshot run calls ``ensure_partitions``
for its hour and the current time, which creates the month of each and the month after (so a
partition exists before the first snapshot of a month), under an advisory lock so two runs
never race to create one. ``usage_snapshots_default`` takes a row whose month has no partition
(a backfill of an old hour, a termination dated far back) so no insert ever fails; the next
call moves such rows into their month's new partition.

DDL cannot take bind parameters: partition names and bounds are built here from ``datetime``
values (digits only), never from user text.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, text

PARENT = "usage_snapshots"
DEFAULT = "usage_snapshots_default"
_LOCK = 7_305_015  # arbitrary, constant advisory-lock key for partition maintenance

COLUMNS = (
    "id, subscription_id, external_subscription_id, period_start, period_end, as_of, "
    "fold_watermark, catalog_at, currency, amount_cents, precise_amount_cents, events_count, "
    "usage, flow_run_id, created_at"
)

# (fixed names only: the S608 warnings below are about f-strings of these constants)
_WAITING = text(f"select distinct date_trunc('month', as_of, 'UTC') from {DEFAULT}")  # noqa: S608
_STAGE = text(f"create temp table tf_partition_move on commit drop as"  # noqa: S608
              f" select {COLUMNS} from {DEFAULT} where false")
_MOVE_OUT = text(f"with moved as (delete from {DEFAULT} where as_of >= :lo and as_of < :hi"  # noqa: S608
                 f" returning {COLUMNS}) insert into tf_partition_move select * from moved")
_MOVE_IN = text(f"insert into {PARENT} ({COLUMNS})"  # noqa: S608
                f" select {COLUMNS} from tf_partition_move")

def month_of(moment: datetime) -> datetime:
    """The first instant (UTC) of the month holding ``moment``."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def month_after(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_{month:%Y_%m}"


def month_partitions(conn: Connection) -> dict[datetime, str]:
    """The existing month partitions, by their first instant (the default one left out)."""
    found: dict[datetime, str] = {}
    for name in conn.execute(text(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = cast(:parent as regclass)"), {"parent": PARENT}).scalars():
        if name != DEFAULT:
            found[datetime.strptime(name[len(PARENT) + 1:], "%Y_%m").replace(tzinfo=UTC)] = name
    return found


def create_month(conn: Connection, month: datetime) -> str:
    """Create one month's partition (empty: the caller has moved any rows of it out of the
    default partition, which PostgreSQL scans to check)."""
    name = partition_name(month)
    conn.execute(text(
        f"create table {name} partition of {PARENT}"
        f" for values from ('{month.isoformat()}') to ('{month_after(month).isoformat()}')"))
    return name


def ensure_partitions(conn: Connection, moments: Iterable[datetime]) -> list[str]:
    """Make sure the month of each moment and the month after it have partitions, and that no
    row waits in the default partition for a month that could have one; returns the names
    created. Run inside the caller's transaction (the lock is released at its end)."""
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    wanted: set[datetime] = set()
    for moment in moments:
        month = month_of(moment)
        wanted |= {month, month_after(month)}
    waiting = {month_of(m) for m in conn.execute(_WAITING).scalars()}
    existing = month_partitions(conn)
    created: list[str] = []
    for month in sorted((wanted | waiting) - existing.keys()):
        if month in waiting:
            # the rows go out of the default partition and back in through the parent, which
            # routes them to the new partition
            conn.execute(_STAGE)
            conn.execute(_MOVE_OUT, {"lo": month, "hi": month_after(month)})
            created.append(create_month(conn, month))
            conn.execute(_MOVE_IN)
            conn.execute(text("drop table tf_partition_move"))
        else:
            created.append(create_month(conn, month))
    return created
