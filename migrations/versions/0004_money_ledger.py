"""money: a ledger nobody can delete, conflicting duplicates counted, whole minor units

- wallet_transactions: rows cannot be deleted; only ``status`` (pending -> settled, failed or
  voided) and ``settled_at`` (with pending -> settled) may change; a trigger enforces it. Its
  foreign keys RESTRICT, so neither a wallet, a customer nor a subscription with ledger rows
  can be deleted (they were CASCADE / SET NULL: the ledger went with its wallet).
- ingest_objects / ingest_runs: a ``conflicts`` count (same event key, different content).
- usage_amounts / usage_snapshots: ``amount_cents`` holds whole minor units (rounded once,
  by tallyflow.models.rating.money), checked.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_GUARD = """
create function wallet_transactions_guard() returns trigger
language plpgsql as $$
begin
  if tg_op = 'DELETE' then
    raise exception 'wallet_transactions is a ledger: row % cannot be deleted', old.id
      using errcode = 'restrict_violation',
            hint = 'post a correcting transaction instead';
  end if;
  if (to_jsonb(new) - 'status' - 'settled_at') is distinct from
     (to_jsonb(old) - 'status' - 'settled_at') then
    raise exception 'wallet_transactions is a ledger: row % can only change its status', old.id
      using errcode = 'restrict_violation',
            hint = 'post a correcting transaction instead';
  end if;
  if new.status is distinct from old.status
     and not (old.status = 'pending' and new.status in ('settled', 'failed', 'voided')) then
    raise exception 'wallet_transactions row %: % -> % is not an allowed transition',
      old.id, old.status, new.status
      using errcode = 'restrict_violation',
            hint = 'allowed: pending -> settled, failed or voided';
  end if;
  if new.settled_at is distinct from old.settled_at
     and not (old.status = 'pending' and new.status = 'settled') then
    raise exception 'wallet_transactions row %: settled_at is set only when it settles', old.id
      using errcode = 'restrict_violation';
  end if;
  return new;
end
$$
"""

_FKS = (
    ("customer_id", "customers", None),
    ("subscription_id", "subscriptions", "SET NULL"),
    ("wallet_id", "wallets", "CASCADE"),
)


def _fk_name(column: str, table: str) -> str:
    return f"fk_wallet_transactions_{column}_{table}"


def upgrade() -> None:
    for column, table, _ in _FKS:
        op.drop_constraint(_fk_name(column, table), "wallet_transactions", type_="foreignkey")
        op.create_foreign_key(_fk_name(column, table), "wallet_transactions", table,
                              [column], ["id"], ondelete="RESTRICT")
    op.execute(_GUARD)
    op.execute(
        "create trigger wallet_transactions_ledger before update or delete"
        " on wallet_transactions for each row execute function wallet_transactions_guard()"
    )
    for table in ("ingest_objects", "ingest_runs"):
        op.add_column(table, sa.Column("conflicts", sa.BigInteger(), nullable=False,
                                       server_default=sa.text("0")))
    for table in ("usage_amounts", "usage_snapshots"):
        op.create_check_constraint(op.f(f"ck_{table}_whole_minor_units"), table,
                                   "amount_cents = trunc(amount_cents)")


def downgrade() -> None:
    for table in ("usage_amounts", "usage_snapshots"):
        op.drop_constraint(f"ck_{table}_whole_minor_units", table, type_="check")
    for table in ("ingest_objects", "ingest_runs"):
        op.drop_column(table, "conflicts")
    op.execute("drop trigger wallet_transactions_ledger on wallet_transactions")
    op.execute("drop function wallet_transactions_guard()")
    for column, table, ondelete in _FKS:
        op.drop_constraint(_fk_name(column, table), "wallet_transactions", type_="foreignkey")
        op.create_foreign_key(_fk_name(column, table), "wallet_transactions", table,
                              [column], ["id"], ondelete=ondelete)
