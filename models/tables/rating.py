"""Rating tables: folds, aggregation state, the new-events marks, snapshots, amounts owed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from tallyflow.models.tables.base import _pk, metadata
from tallyflow.models.tables.ingestion import ingest_objects

# Folding marks an ingested object as folded into ``usage_states`` in the transaction that folds
# it; the partial index keeps "what is left to fold" a lookup of the new objects only, however
# long the ledger grows. (Columns are appended here so the Ingestion section stays as it is.)
ingest_objects.append_column(Column("folded_at", DateTime(timezone=True)))
ingest_objects.append_column(Column("fold_id", BigInteger))
Index(
    "ix_ingest_objects_unfolded",
    ingest_objects.c.id,
    postgresql_where=text("status = 'ingested' and folded_at is null"),
)


# One row per fold or rebuild transaction; its id is the watermark snapshots compare against.
usage_folds = Table(
    "usage_folds",
    metadata,
    _pk(),
    Column("kind", Text, nullable=False, server_default=text("'fold'")),
    Column("metric_code", Text),
    Column("objects", Integer, nullable=False, server_default=text("0")),
    Column("events", BigInteger, nullable=False, server_default=text("0")),
    Column("folded", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind in ('fold', 'rebuild')", name="kind"),
)


# Aggregation state per (subscription, metric, period, metric filter values, group values).
# count/sum/max/weighted_sum/latest live in typed numeric columns so a fold is one
# INSERT ... SELECT ... GROUP BY ... ON CONFLICT in SQL; unique_count keeps its last operation
# per distinct value in ``state`` (jsonb), merged in Python with the pure state's merge.
usage_states = Table(
    "usage_states",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "billable_metric_id",
        BigInteger,
        ForeignKey("billable_metrics.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("filter_key", JSONB, primary_key=True),
    Column("group_key", JSONB, primary_key=True),
    Column("events_count", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable_count", BigInteger, nullable=False, server_default=text("0")),
    Column("total", Numeric, nullable=False, server_default=text("0")),
    Column("precise_total", Numeric, nullable=False, server_default=text("0")),
    Column("moment", Numeric, nullable=False, server_default=text("0")),
    Column("maximum", Numeric),
    Column("latest_value", Numeric),
    Column("latest_ts", DateTime(timezone=True)),
    Column("latest_seq", BigInteger),
    Column("state", JSONB),
    Column("fold_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # recurring sum_agg only: value totals per local day of the customer's timezone
    # ({"2026-03-14": 12.5}), what prorated charges weigh (migration 0013 appends it)
    Column("day_totals", JSONB),
    # Unbillable events, folded with the state (docs/data-quality.md, "Unbillable events";
    # migration 0018): events whose aggregated field held a value that is not a number, a few
    # of their transaction ids, and a few transaction ids of the state's events (samples of
    # ``unpriced`` events when no charge filter takes this key).
    Column("not_a_number_count", BigInteger, nullable=False, server_default=text("0")),
    Column("not_a_number_ids", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("sample_ids", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
)


# The last fold that changed a subscription's state: the snapshot flow's "new events" signal.
usage_marks = Table(
    "usage_marks",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fold_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# Hourly current-usage snapshots: one per (subscription, period, as_of), so a rerun of the
# same hour replaces its row instead of adding one.
#
# Migration 0015 (docs/scaling.md §2): range partitions by month of ``as_of``, made ahead of
# need by every snapshot run (``tallyflow.infra.partitions``), plus a default partition. The
# partition key must be in every unique constraint, so the primary key is (id, as_of); ``id``
# comes from a plain sequence (no identity column on a partitioned table before PostgreSQL 17;
# the migration makes the sequence the column's default, owned by it).
usage_snapshots_id_seq = Sequence("usage_snapshots_id_seq", metadata=metadata)
usage_snapshots = Table(
    "usage_snapshots",
    metadata,
    Column("id", BigInteger, usage_snapshots_id_seq, nullable=False),
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("external_subscription_id", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("fold_watermark", BigInteger, nullable=False),
    Column("catalog_at", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    Column("events_count", BigInteger, nullable=False),
    Column("usage", JSONB, nullable=False),
    Column("flow_run_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("id", "as_of"),
    UniqueConstraint("subscription_id", "period_start", "as_of"),
    Index("ix_usage_snapshots_as_of", "as_of"),
    CheckConstraint("amount_cents = trunc(amount_cents)", name="whole_minor_units"),
    postgresql_partition_by="RANGE (as_of)",
)


# What the latest snapshot says is owed per (subscription, period): the wallet flow's input.
usage_amounts = Table(
    "usage_amounts",
    metadata,
    Column(
        "subscription_id",
        BigInteger,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("external_subscription_id", Text, nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount_cents", Numeric, nullable=False),
    Column("precise_amount_cents", Numeric, nullable=False),
    # the snapshot it was taken from: (snapshot_id, snapshot_as_of) is that snapshot's key, so
    # a look-up touches one partition (migration 0015 says why there is no foreign key)
    Column("snapshot_id", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("snapshot_as_of", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_cents = trunc(amount_cents)", name="whole_minor_units"),
)


# The Parquet files ``tallyflow archive`` moved snapshots of whole past months into (migration
# 0016): one row per file, recorded in the transaction that replaces the month's partition by
# the snapshots that stay (docs/scaling.md §2), so a snapshot is either in the table or in
# exactly one recorded file.
snapshot_archives = Table(
    "snapshot_archives",
    metadata,
    _pk(),
    Column("month", DateTime(timezone=True), nullable=False),
    Column("before", DateTime(timezone=True), nullable=False),
    Column("url", Text, nullable=False),
    Column("temporary_url", Text, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("kept", BigInteger, nullable=False),
    Column("first_snapshot_id", BigInteger, nullable=False),
    Column("last_snapshot_id", BigInteger, nullable=False),
    Column("moved", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("url", name="uq_snapshot_archives_url"),
)


# Change sets (migration 0031, tasks/usage/changes.py, docs/architecture.md §24): per billing
# hour, the subscriptions it touches (new events, catalog or lifecycle changes, wallet changes,
# period boundaries since the last completed hour), and per subscription the next instant at
# which its period or life changes (a boundary), so an hour finds its boundaries by index.
change_sets = Table(
    "change_sets",
    metadata,
    Column("as_of", DateTime(timezone=True), primary_key=True),
    # the completed hour this set is relative to; null with ``full_set``: every subscription
    Column("base_as_of", DateTime(timezone=True)),
    Column("full_set", Boolean, nullable=False),
    # the highest fold committed when the set was taken (the next set starts past it)
    Column("fold_watermark", BigInteger, nullable=False),
    Column("captured_at", DateTime(timezone=True), nullable=False),
    Column("subscriptions", Integer, nullable=False, server_default=text("0")),
    Column("reasons", JSONB, nullable=False, server_default=text("'{}'")),
    Column("completed_at", DateTime(timezone=True)),
)

change_set_members = Table(
    "change_set_members",
    metadata,
    Column("as_of", DateTime(timezone=True),
           ForeignKey("change_sets.as_of", ondelete="CASCADE"), nullable=False),
    Column("subscription_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("as_of", "subscription_id"),
)

change_set_bounds = Table(
    "change_set_bounds",
    metadata,
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id", ondelete="CASCADE"),
           primary_key=True, autoincrement=False),
    Column("next_boundary", DateTime(timezone=True)),
    Index("ix_change_set_bounds_next_boundary", "next_boundary"),
)
