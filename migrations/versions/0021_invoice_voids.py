"""void and regenerate invoices

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07

Why (issue 27, docs/architecture.md §13): a finalized invoice may become ``voided`` (Lago's
``Invoices::VoidService``), and a voided one may be regenerated (Lago's
``Invoices::RegenerateFromVoidedService``): a new finalized invoice that takes its periods over.

- ``invoices.status`` may be ``voided``; ``voided_at`` says when (set exactly when voided).
- ``invoices.voided_invoice_id``: on a regenerated invoice, the voided invoice it replaces
  (Lago's column); unique, so a voided invoice is regenerated at most once.
- ``uq_invoices_customer_day`` (one subscription invoice per customer and billing day) now
  holds for the invoices the period close writes (``voided_invoice_id is null``): a voided
  invoice and its regenerated successor share the day, and the successor is held by the
  unique ``voided_invoice_id`` instead.
- ``invoice_subscriptions`` is keyed by (subscription, period start, ``regeneration``): the
  period close writes generation 0, a regenerated invoice the generation after its voided
  one's. A period is still closed once per generation, never twice by the close.
- The ``invoices_final`` trigger allows exactly one more change: finalized -> voided (status
  and ``voided_at``, nothing else); a voided invoice changes as a finalized one does (its
  payment status only) and is never deleted; nothing else becomes or is inserted voided. The
  parts guard holds a voided invoice's fees and periods as it holds a finalized one's.

The downgrade refuses while voided or regenerated invoices exist (0020's schema cannot hold
them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_INVOICE_GUARD = """
create or replace function invoices_guard() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    if new.status = 'voided' then
      raise exception 'an invoice cannot be written voided: only a finalized one is voided'
        using errcode = 'restrict_violation';
    end if;
    return new;
  end if;
  if tg_op = 'UPDATE' and new.status = 'voided' and old.status not in ('finalized', 'voided')
  then
    raise exception 'invoice % is %: only a finalized invoice can be voided', old.id,
      old.status using errcode = 'restrict_violation';
  end if;
  if old.status not in ('finalized', 'voided') then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  if tg_op = 'DELETE' then
    raise exception 'invoice % is %: it cannot be deleted', old.number, old.status
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  if old.status = 'finalized' and new.status = 'voided' then
    if (to_jsonb(new) - 'payment_status' - 'updated_at' - 'emitted_at' - 'status'
        - 'voided_at') is distinct from
       (to_jsonb(old) - 'payment_status' - 'updated_at' - 'emitted_at' - 'status'
        - 'voided_at') then
      raise exception 'invoice %: a void changes its status and voided_at, nothing else',
        old.number using errcode = 'restrict_violation';
    end if;
    return new;
  end if;
  if (to_jsonb(new) - 'payment_status' - 'updated_at' - 'emitted_at') is distinct from
     (to_jsonb(old) - 'payment_status' - 'updated_at' - 'emitted_at') then
    raise exception 'invoice % is %: only its payment status can change', old.number,
      old.status using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  return new;
end
$$
"""

_PART_GUARD = """
create or replace function invoice_parts_guard() returns trigger
language plpgsql as $$
declare
  target bigint;
begin
  target := case when tg_op = 'INSERT' then new.invoice_id else old.invoice_id end;
  if exists (select 1 from invoices where id = target and status in ('finalized', 'voided'))
     or (tg_op = 'UPDATE' and exists (select 1 from invoices where id = new.invoice_id
                                       and status in ('finalized', 'voided'))) then
    raise exception '% of finalized invoice % cannot change', tg_table_name, target
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$
"""

# 0006's functions, for the downgrade
_OLD_INVOICE_GUARD = """
create or replace function invoices_guard() returns trigger
language plpgsql as $$
begin
  if old.status <> 'finalized' then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  if tg_op = 'DELETE' then
    raise exception 'invoice % is finalized: it cannot be deleted', old.number
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  if (to_jsonb(new) - 'payment_status' - 'updated_at' - 'emitted_at') is distinct from
     (to_jsonb(old) - 'payment_status' - 'updated_at' - 'emitted_at') then
    raise exception 'invoice % is finalized: only its payment status can change', old.number
      using errcode = 'restrict_violation', hint = 'issue a credit note instead';
  end if;
  return new;
end
$$
"""

_OLD_PART_GUARD = _PART_GUARD.replace("status in ('finalized', 'voided')",
                                      "status = 'finalized'")

_DAY_WHERE = "invoice_type = 'subscription'"


def upgrade() -> None:
    op.add_column("invoices", sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("invoices", sa.Column("voided_invoice_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_invoices_voided_invoice_id_invoices"), "invoices",
                          "invoices", ["voided_invoice_id"], ["id"], ondelete="RESTRICT")
    op.create_unique_constraint("uq_invoices_voided_invoice", "invoices", ["voided_invoice_id"])
    op.drop_constraint(op.f("ck_invoices_status"), "invoices", type_="check")
    op.create_check_constraint(op.f("ck_invoices_status"), "invoices",
                               "status in ('draft', 'finalized', 'voided')")
    op.create_check_constraint(op.f("ck_invoices_voided"), "invoices",
                               "(status = 'voided') = (voided_at is not null)")
    op.drop_index("uq_invoices_customer_day", table_name="invoices")
    op.create_index("uq_invoices_customer_day", "invoices",
                    ["customer_id", "issuing_date", "invoice_type"], unique=True,
                    postgresql_where=sa.text(f"{_DAY_WHERE} and voided_invoice_id is null"))
    op.add_column("invoice_subscriptions",
                  sa.Column("regeneration", sa.Integer(), server_default=sa.text("0"),
                            nullable=False))
    op.drop_constraint(op.f("pk_invoice_subscriptions"), "invoice_subscriptions",
                       type_="primary")
    op.create_primary_key(op.f("pk_invoice_subscriptions"), "invoice_subscriptions",
                          ["subscription_id", "period_start", "regeneration"])
    op.execute(_INVOICE_GUARD)
    op.execute(_PART_GUARD)
    op.execute("drop trigger invoices_final on invoices")
    op.execute("create trigger invoices_final before insert or update or delete on invoices"
               " for each row execute function invoices_guard()")


def downgrade() -> None:
    bind = op.get_bind()
    kept = bind.execute(sa.text("select count(*) from invoices where status = 'voided'"
                                " or voided_invoice_id is not null")).scalar_one()
    if kept:
        raise RuntimeError(f"{kept} voided or regenerated invoice(s): 0020's schema cannot"
                           " hold them, so this downgrade would lose them")
    op.execute("drop trigger invoices_final on invoices")
    op.execute("create trigger invoices_final before update or delete on invoices"
               " for each row execute function invoices_guard()")
    op.execute(_OLD_PART_GUARD)
    op.execute(_OLD_INVOICE_GUARD)
    op.drop_constraint(op.f("pk_invoice_subscriptions"), "invoice_subscriptions",
                       type_="primary")
    op.create_primary_key(op.f("pk_invoice_subscriptions"), "invoice_subscriptions",
                          ["subscription_id", "period_start"])
    op.drop_column("invoice_subscriptions", "regeneration")
    op.drop_index("uq_invoices_customer_day", table_name="invoices")
    op.create_index("uq_invoices_customer_day", "invoices",
                    ["customer_id", "issuing_date", "invoice_type"], unique=True,
                    postgresql_where=sa.text(_DAY_WHERE))
    op.drop_constraint(op.f("ck_invoices_voided"), "invoices", type_="check")
    op.drop_constraint(op.f("ck_invoices_status"), "invoices", type_="check")
    op.create_check_constraint(op.f("ck_invoices_status"), "invoices",
                               "status in ('draft', 'finalized')")
    op.drop_constraint("uq_invoices_voided_invoice", "invoices", type_="unique")
    op.drop_constraint(op.f("fk_invoices_voided_invoice_id_invoices"), "invoices",
                       type_="foreignkey")
    op.drop_column("invoices", "voided_at")
    op.drop_column("invoices", "voided_invoice_id")
