"""Ingestion tables: run history, ingest runs, the object ledger, events, rejected rows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, metadata

# Every flow run's outcome. ``status`` ends completed, failed (with ``error``), cancelled or
# crashed; a run whose process died (kill -9, lost machine) stops updating ``heartbeat_at`` and
# the next command that reads or writes history marks it crashed.
RUN_STATUSES = "('running', 'completed', 'failed', 'cancelled', 'crashed')"


run_history = Table(
    "run_history",
    metadata,
    Column("flow_run_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("name", Text),
    Column("parent_flow_run_id", Text),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("error", Text),
    Column("figures", JSONB),
    Column("host", Text),
    Column("pid", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(f"status in {RUN_STATUSES}", name="status"),
    Index("ix_run_history_started_at", "started_at"),
    Index("ix_run_history_running", "heartbeat_at", postgresql_where=text("status = 'running'")),
)


ingest_runs = Table(
    "ingest_runs",
    metadata,
    _pk(),
    Column("flow_run_id", Text),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'running'")),
    Column("objects", Integer, nullable=False, server_default=text("0")),
    Column("failed_objects", Integer, nullable=False, server_default=text("0")),
    Column("accepted", BigInteger, nullable=False, server_default=text("0")),
    Column("duplicates", BigInteger, nullable=False, server_default=text("0")),
    Column("rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable", BigInteger, nullable=False, server_default=text("0")),
    Column("bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("seconds", Numeric, nullable=False, server_default=text("0")),
    # Same event key as a stored event, different content: kept out, one rejected row each.
    Column("conflicts", BigInteger, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    # Every record accounted for (docs/data-quality.md; migration 0018): records read =
    # records_emitted + rejected + records_empty (no_usage); events = what emitted records gave.
    Column("records", BigInteger, nullable=False, server_default=text("0")),
    Column("records_emitted", BigInteger, nullable=False, server_default=text("0")),
    Column("records_empty", BigInteger, nullable=False, server_default=text("0")),
    Column("events", BigInteger, nullable=False, server_default=text("0")),
    # migration 0019: usage fields no mapping knew (name -> records) and mapping paths no
    # record matched (path -> objects): a provider change is seen the day it happens.
    Column("unmapped_usage_fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("paths_never_matched", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Whether the run's listing is registered in the ledger: only then does the ingest
    # watermark count its start. A run that died before, and a reclaim of dead runs' objects
    # (which lists nothing), never are (migration 0020; rows written directly default true).
    Column("listed", Boolean, nullable=False, server_default=text("true")),
    CheckConstraint(f"status in {RUN_STATUSES}", name="status"),
)


# The object ledger: one row per (source, path, version). A changed object is a new version and
# is ingested again (event dedup absorbs the overlap). Rows are claimed with FOR UPDATE SKIP
# LOCKED inside the transaction that loads them, so a crash simply releases the claim.
ingest_objects = Table(
    "ingest_objects",
    metadata,
    _pk(),
    Column("source", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("size", BigInteger),
    Column("modified_at", DateTime(timezone=True)),
    Column("format", Text),
    Column("compression", Text),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Column("rows", BigInteger, nullable=False, server_default=text("0")),
    Column("accepted", BigInteger, nullable=False, server_default=text("0")),
    Column("duplicates", BigInteger, nullable=False, server_default=text("0")),
    Column("rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("unbillable", BigInteger, nullable=False, server_default=text("0")),
    Column("conflicts", BigInteger, nullable=False, server_default=text("0")),
    Column("run_id", BigInteger, ForeignKey("ingest_runs.id", ondelete="SET NULL")),
    Column("discovered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ingested_at", DateTime(timezone=True)),
    Column("seconds", Numeric),
    # The source that read it (kind; mapping, format and options as JSON): re-ingest uses them.
    Column("source_kind", Text, nullable=False, server_default=text("'fsspec'")),
    Column("source_spec", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Every record accounted for (docs/data-quality.md; migration 0018): records read =
    # records_emitted + rejected + records_empty (no_usage); events = what emitted records gave.
    Column("records", BigInteger, nullable=False, server_default=text("0")),
    Column("records_emitted", BigInteger, nullable=False, server_default=text("0")),
    Column("records_empty", BigInteger, nullable=False, server_default=text("0")),
    Column("events", BigInteger, nullable=False, server_default=text("0")),
    # migration 0019: as on ingest_runs, for this object (paths: a list).
    Column("unmapped_usage_fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("paths_never_matched", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # The run that listed it to load it, and when: a pending object whose claimer ended
    # (killed, cancelled, crashed) is a dead run's claim, reclaimed by the billing cycle
    # (tasks/ingest/claims.py, migration 0020).
    Column("claimed_by", BigInteger, ForeignKey("ingest_runs.id", ondelete="SET NULL")),
    Column("claimed_at", DateTime(timezone=True)),
    UniqueConstraint("source", "path", "version"),
    CheckConstraint("status in ('pending', 'ingested', 'failed')", name="status"),
    Index("ix_ingest_objects_pending", "source", postgresql_where=text("status <> 'ingested'")),
)


# Events keep Lago's fields as they came. The primary key is Lago's dedup key, so the first copy
# wins and no second unique index slows every insert; ``id`` is the ingestion order (it breaks
# timestamp ties for latest_agg) and, like ``object_id``, only grows, so BRIN indexes cover both
# for a fraction of a btree's insert cost.
#
# Migration 0011 (docs/scaling.md): the key columns compare byte-wise ("C" collation): they
# are identifiers, and the locale's comparison cost every insert into the unique index.
events = Table(
    "events",
    metadata,
    Column("external_subscription_id", Text(collation="C"), primary_key=True),
    Column("transaction_id", Text(collation="C"), primary_key=True),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("code", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("precise_total_amount_cents", Numeric),
    Column("object_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    # Which of its record's events (a mapping may derive several from one record): ingestion
    # order is (object, row_number, sub_index).
    Column("sub_index", Integer, nullable=False, server_default=text("0")),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Voided (migration 0017, tasks/corrections/voids.py): kept under its key, counted nowhere;
    # every read
    # of events for billing filters ``voided_at is null``. Who and why: ``event_voids``.
    Column("voided_at", DateTime(timezone=True)),
    Index("ix_events_object_brin", "object_id", postgresql_using="brin"),
    Index("ix_events_id_brin", "id", postgresql_using="brin"),
)


# The provider request behind LLM events (migration 0019, tasks/ingest/requests.py): one row per
# request identity a mapping derives (``properties.request_id``), written with the events of the
# record that billed it: its subscriber, mapping and split (type -> tokens). A later record of
# the same request through another mapping, or with another split, is withheld: not billed
# twice (docs/architecture.md §3, invariant 2).
event_requests = Table(
    "event_requests",
    metadata,
    Column("request_id", Text(collation="C"), primary_key=True),
    Column("external_subscription_id", Text(collation="C"), nullable=False),
    Column("mapping", Text, nullable=False),
    Column("split", JSONB, nullable=False),
    Column("object_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


rejected_rows = Table(
    "rejected_rows",
    metadata,
    _pk(),
    Column(
        "object_id",
        BigInteger,
        ForeignKey("ingest_objects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("row_number", BigInteger, nullable=False),
    Column("sub_index", Integer, nullable=False, server_default=text("0")),
    Column("field", Text),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'open'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("object_id", "row_number", "sub_index"),
)


# The Parquet files ``tallyflow archive`` moved events into (migration 0014): one row per file,
# written in the transaction that deletes exactly its events. The newest ``before`` is the
# archive horizon: events before it are refused at ingest (reason ``archived_period``).
event_archives = Table(
    "event_archives",
    metadata,
    _pk(),
    Column("before", DateTime(timezone=True), nullable=False),
    Column("url", Text, nullable=False),
    Column("temporary_url", Text, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("first_event_id", BigInteger, nullable=False),
    Column("last_event_id", BigInteger, nullable=False),
    Column("first_timestamp", DateTime(timezone=True), nullable=False),
    Column("last_timestamp", DateTime(timezone=True), nullable=False),
    Column("moved", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("url", name="uq_event_archives_url"),
)


# The audit trail of voided events (migration 0017, tasks/corrections/voids.py): one row per event,
# written
# in the transaction that sets ``events.voided_at``; a trigger refuses updates and deletes. No
# foreign key to ``events``: the trail outlives nothing it should not (voided events are never
# archived, tasks/archive/events.py), and the key is what people name.
event_voids = Table(
    "event_voids",
    metadata,
    _pk(),
    Column("external_subscription_id", Text(collation="C"), nullable=False),
    Column("transaction_id", Text(collation="C"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("code", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("object_id", BigInteger, nullable=False),
    Column("row_number", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("voided_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("external_subscription_id", "transaction_id", name="uq_event_voids_key"),
)


# The API's objects, reserved before they are written (migration 0030, docs/architecture.md
# §23): a row is committed before its object is written, so an object written before a crash
# and never registered in the ledger still holds the ingest watermark back, from ``begun_at``
# (``clock_timestamp()``: see ``api_mark``) until it is ingested. Rows of ingested objects are
# deleted by the API's sweep.
api_writes = Table(
    "api_writes",
    metadata,
    Column("path", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("begun_at", DateTime(timezone=True), nullable=False,
           server_default=func.clock_timestamp()),
)

# Up to when every object the API began to write is reserved in ``api_writes`` (one row): the
# API's listing time for the ingest watermark, advanced by a running API's loader.
api_mark = Table(
    "api_mark",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("marked_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)
