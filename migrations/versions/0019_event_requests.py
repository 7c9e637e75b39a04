"""event_requests: the provider request each LLM record reports, and which record billed it;
the mapping report of each object and run (unknown usage fields, paths never matched)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

Why: the same LLM request can reach Tallyflow twice, through two mappings (a LiteLLM spend log
and the OpenAI response it proxied), split differently into token types, so their events have
different keys and the event key alone would bill both (docs/architecture.md §3, invariant 2).
One row per request identity, written in the transaction that stores the events of the record
that owns it; a later record naming the same request is withheld (tasks/ingest/requests.py).
``unmapped_usage_fields`` and ``paths_never_matched`` on ``ingest_objects`` and ``ingest_runs``
keep what a run found its mapping did not know, so a provider's new usage field is seen the day
it appears (docs/llm-usage.md); constant defaults, so adding them rewrites no row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_requests",
        sa.Column("request_id", sa.Text(collation="C"), primary_key=True),
        sa.Column("external_subscription_id", sa.Text(collation="C"), nullable=False),
        sa.Column("mapping", sa.Text, nullable=False),
        sa.Column("split", JSONB, nullable=False),
        sa.Column("object_id", sa.BigInteger, nullable=False),
        sa.Column("row_number", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )


    for table, never in (("ingest_objects", "'[]'::jsonb"), ("ingest_runs", "'{}'::jsonb")):
        op.add_column(table, sa.Column("unmapped_usage_fields", JSONB, nullable=False,
                                       server_default=sa.text("'{}'::jsonb")))
        op.add_column(table, sa.Column("paths_never_matched", JSONB, nullable=False,
                                       server_default=sa.text(never)))


def downgrade() -> None:
    for table in ("ingest_objects", "ingest_runs"):
        op.drop_column(table, "paths_never_matched")
        op.drop_column(table, "unmapped_usage_fields")
    op.drop_table("event_requests")
