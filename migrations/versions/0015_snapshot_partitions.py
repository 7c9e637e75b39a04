"""usage_snapshots: range partitions by month of as_of; usage_amounts names its snapshot whole

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29

Why (docs/scaling.md §2 has the design and the measurements): the hourly snapshot is the one
table of the hourly path that grows with time (one row per changed subscription per hour).
Monthly partitions keep the hourly upsert and its reads on the current month's indexes and let
``tallyflow archive`` replace a whole month instead of deleting 72M rows one by one.

PostgreSQL needs the partition key in every unique constraint: the primary key becomes
``(id, as_of)`` (``id`` stays unique on its own: one sequence feeds it), the upsert's key
``(subscription_id, period_start, as_of)`` has it already. A partitioned table has no identity
column before PostgreSQL 17, so ``id`` takes its values from ``usage_snapshots_id_seq``,
continuing where the identity stopped.

``usage_amounts.snapshot_id`` (no foreign key, before or after) is joined with
``snapshot_as_of``, new here: with it a look-up of the snapshot touches one partition. Its own
``as_of`` is not that key: a termination moves it (``tasks/lifecycle.rewind_amounts``) without
changing the snapshot. Why still no foreign key: the reference is written by the statement that
writes the snapshot, from the snapshot's own row; a key would make every hourly upsert of
100,000 amounts probe and key-share lock its snapshot, and would refuse the archive's swap of a
month (``tasks/archive/snapshots.py`` keeps every snapshot an amount names, and its test pins
that).

Every existing row is copied (partitions for every month that has rows, the current month and
the next, and ``usage_snapshots_default`` for anything else). Later months are created ahead
of need by every usage snapshot run (``tallyflow.infra.partitions``).
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_COLUMNS = """
  id bigint not null default nextval('usage_snapshots_id_seq'::regclass),
  subscription_id bigint not null,
  external_subscription_id text not null,
  period_start timestamptz not null,
  period_end timestamptz not null,
  as_of timestamptz not null,
  fold_watermark bigint not null,
  catalog_at timestamptz not null,
  currency text not null,
  amount_cents numeric not null,
  precise_amount_cents numeric not null,
  events_count bigint not null,
  usage jsonb not null,
  flow_run_id text,
  created_at timestamptz not null default now()
"""
_CONSTRAINTS = """
  constraint fk_usage_snapshots_subscription_id_subscriptions foreign key (subscription_id)
    references subscriptions (id) on delete cascade,
  constraint uq_usage_snapshots_subscription_id unique (subscription_id, period_start, as_of),
  constraint ck_usage_snapshots_whole_minor_units check (amount_cents = trunc(amount_cents))
"""
_NAMES = ("id, subscription_id, external_subscription_id, period_start, period_end, as_of,"
          " fold_watermark, catalog_at, currency, amount_cents, precise_amount_cents,"
          " events_count, usage, flow_run_id, created_at")
_COPY = f"insert into usage_snapshots ({_NAMES}) select {_NAMES} from usage_snapshots_old"  # noqa: S608

# One partition per month with rows, plus the current month and the next (UTC months; bounds
# and names built in SQL from the dates themselves).
_PARTITIONS = """
do $$
declare m timestamptz;
begin
  for m in
    select distinct date_trunc('month', as_of, 'UTC') from usage_snapshots_old
    union select date_trunc('month', now(), 'UTC')
    union select date_trunc('month', now(), 'UTC') + interval '1 month'
  loop
    execute format(
      'create table %I partition of usage_snapshots for values from (%L) to (%L)',
      'usage_snapshots_' || to_char(m at time zone 'UTC', 'YYYY_MM'),
      m, (m at time zone 'UTC' + interval '1 month') at time zone 'UTC');
  end loop;
end $$
"""


def _set_aside() -> None:
    op.execute("drop index if exists ix_usage_snapshots_as_of")
    op.execute("alter table usage_snapshots rename constraint pk_usage_snapshots"
               " to pk_usage_snapshots_old")
    op.execute("alter table usage_snapshots rename constraint uq_usage_snapshots_subscription_id"
               " to uq_usage_snapshots_old")
    op.execute("alter table usage_snapshots rename to usage_snapshots_old")


def upgrade() -> None:
    op.execute("alter table usage_amounts add column snapshot_as_of timestamptz")
    op.execute("update usage_amounts a set snapshot_as_of = s.as_of"
               " from usage_snapshots s where s.id = a.snapshot_id")
    # an amount whose snapshot is gone (none are expected: no key ever enforced it) keeps the
    # moment it was written for
    op.execute("update usage_amounts set snapshot_as_of = as_of where snapshot_as_of is null")
    op.execute("alter table usage_amounts alter column snapshot_as_of set not null")

    _set_aside()
    op.execute("alter table usage_snapshots_old alter column id drop identity if exists")
    op.execute("create sequence usage_snapshots_id_seq as bigint")
    op.execute("select setval('usage_snapshots_id_seq',"
               " coalesce((select max(id) from usage_snapshots_old), 0) + 1, false)")
    op.execute(f"create table usage_snapshots ({_COLUMNS},"
               " constraint pk_usage_snapshots primary key (id, as_of),"
               f" {_CONSTRAINTS}) partition by range (as_of)")
    op.execute(_PARTITIONS)
    op.execute("create table usage_snapshots_default partition of usage_snapshots default")
    op.execute("create index ix_usage_snapshots_as_of on usage_snapshots (as_of)")
    op.execute(_COPY)
    op.execute("drop table usage_snapshots_old")
    op.execute("alter sequence usage_snapshots_id_seq owned by usage_snapshots.id")


def downgrade() -> None:
    op.execute("alter table usage_snapshots alter column id drop default")
    op.execute("alter sequence usage_snapshots_id_seq owned by none")
    _set_aside()
    op.execute(
        "create table usage_snapshots ("
        + _COLUMNS.replace("default nextval('usage_snapshots_id_seq'::regclass)",
                           "generated by default as identity")
        + ", constraint pk_usage_snapshots primary key (id), " + _CONSTRAINTS + ")")
    op.execute("create index ix_usage_snapshots_as_of on usage_snapshots (as_of)")
    op.execute(_COPY)
    op.execute("select setval(pg_get_serial_sequence('usage_snapshots', 'id'),"
               " coalesce((select max(id) from usage_snapshots), 0) + 1, false)")
    op.execute("drop table usage_snapshots_old cascade")
    op.execute("drop sequence usage_snapshots_id_seq")
    op.execute("alter table usage_amounts drop column snapshot_as_of")
