"""event voids: an event marked voided (``events.voided_at``) and its audit trail (``event_voids``)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Why: a wrong event must stop counting without leaving the table (history never lies,
docs/architecture.md §3): it stays stored under its key, so a resend of the same key is still a
duplicate, and who voided it, when and why is kept in ``event_voids``, one row per event,
never changed nor deleted (a trigger). ``voided_at`` on the event itself is what every read of
events filters on; the column is nullable without a default, so adding it rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_GUARD = """
create function event_voids_guard() returns trigger
language plpgsql as $$
begin
  if tg_table_name = 'event_voids' then
    raise exception 'event_voids is an audit trail: a void is never changed nor deleted';
  end if;
  raise exception 'event %/% is voided: a void is never undone',
    old.external_subscription_id, old.transaction_id;
end
$$
"""


def upgrade() -> None:
    op.add_column("events", sa.Column("voided_at", sa.DateTime(timezone=True)))
    op.create_table(
        "event_voids",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("external_subscription_id", sa.Text(collation="C"), nullable=False),
        sa.Column("transaction_id", sa.Text(collation="C"), nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("object_id", sa.BigInteger, nullable=False),
        sa.Column("row_number", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.UniqueConstraint("external_subscription_id", "transaction_id",
                            name="uq_event_voids_key"),
    )
    op.execute(_GUARD)
    op.execute("create trigger event_voids_kept before update or delete on event_voids"
               " for each row execute function event_voids_guard()")
    op.execute("create trigger events_void_kept before update on events for each row"
               " when (old.voided_at is not null and new.voided_at is distinct from"
               " old.voided_at) execute function event_voids_guard()")


def downgrade() -> None:
    op.execute("drop trigger events_void_kept on events")
    op.execute("drop trigger event_voids_kept on event_voids")
    op.execute("drop function event_voids_guard()")
    op.drop_table("event_voids")
    op.drop_column("events", "voided_at")
