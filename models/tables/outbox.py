"""Webhooks: the organization's signing key, the endpoints, the outbox and its attempt log
(docs/architecture.md §17; Lago's ``webhook_endpoints`` and ``webhooks``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, metadata

# One row: the organization's id (the envelope's ``organization_id``) and its HMAC key, made
# once when the first endpoint is added, shown by `tallyflow webhooks key`. In the database,
# not a setting, so every process (CLI, API, served runs, workers) signs with the same key and
# no deployment has to carry a secret.
webhook_signing = Table(
    "webhook_signing",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("organization_id", Text, nullable=False),
    Column("hmac_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("id = 1", name="one_row"),
)

# Where webhooks go (Lago's WebhookEndpoint). A removed endpoint is kept (``removed_at``) so
# its delivery log still names it; its URL is free again.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("webhook_url", Text, nullable=False),
    Column("signature_algo", Text, nullable=False, server_default=text("'hmac'")),
    Column("name", Text),
    Column("event_types", JSONB),  # null: every type
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("removed_at", DateTime(timezone=True)),
    CheckConstraint("signature_algo = 'hmac'", name="signature_algo"),
    Index("ux_webhook_endpoints_live_url", "webhook_url", unique=True,
          postgresql_where=text("removed_at is null")),
)

# The outbox: one row per webhook and endpoint, written in the transaction of the change it
# announces (``enqueue``), with the exact body sent and signed on every attempt. ``lago_id`` is
# the ``X-Lago-Unique-Key``. ``dedupe_key`` (a caller's name for the logical event) makes a
# rerun of the change add nothing. ``next_attempt_at`` is both the backoff and the claim's
# lease: a deliverer that dies mid-attempt leaves the row due again when the lease ends.
webhooks = Table(
    "webhooks",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("endpoint_id", BigInteger,
           ForeignKey("webhook_endpoints.id", ondelete="RESTRICT"), nullable=False),
    Column("webhook_type", Text, nullable=False),
    Column("object_type", Text, nullable=False),
    Column("object_id", Text),
    Column("dedupe_key", Text),
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False,
           server_default=func.now()),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("http_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status in ('pending', 'retrying', 'succeeded', 'failed')", name="status"),
    Index("ux_webhooks_endpoint_dedupe", "endpoint_id", "dedupe_key", unique=True),
    Index("ix_webhooks_due", "next_attempt_at",
          postgresql_where=text("status in ('pending', 'retrying')")),
)

# Every attempt, kept (`tallyflow webhooks deliveries ID`): when, how long, what the receiver
# answered (its body cut to a few KB) or why it did not.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    _pk(),
    Column("webhook_id", BigInteger, ForeignKey("webhooks.id", ondelete="RESTRICT"),
           nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("milliseconds", Integer, nullable=False),
    Column("http_status", Integer),
    Column("error", Text),
    Column("response", Text),
    Index("ux_webhook_attempts_webhook_attempt", "webhook_id", "attempt", unique=True),
)
