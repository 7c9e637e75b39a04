"""History as pandas DataFrames, for data engineers: usage snapshots, wallet transactions and
invoices, and their CSV/Parquet exports.

Money stays exact: ``numeric`` columns are read with ``coerce_float=False``, so they arrive as
``Decimal`` objects (never float), are written to CSV as their exact decimal text, and to
Parquet as Arrow ``decimal128`` columns whose scale is the largest the column holds. pandas and
pyarrow are imported here only, inside the functions, so no other command pays for them.
Queries are parameterised; filters are values, never SQL text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from tallyflow.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Filters:
    """What to export: one customer, one subscription, a time window (half-open) on each
    history's own business time: a snapshot's ``as_of``, a transaction's ``as_of`` (the hour
    its run was for), an invoice's issuing date."""

    customer: str | None = None
    subscription: str | None = None
    since: datetime | None = None
    until: datetime | None = None


_USAGE = """
    select c.external_id as external_customer_id, u.external_subscription_id,
           u.period_start, u.period_end, u.as_of, u.currency, u.amount_cents,
           u.precise_amount_cents, u.events_count
    from usage_snapshots u
    join subscriptions s on s.id = u.subscription_id
    join customers c on c.id = s.customer_id
    where (cast(:customer as text) is null or c.external_id = :customer)
      and (cast(:subscription as text) is null or u.external_subscription_id = :subscription)
      and (cast(:since as timestamptz) is null or u.as_of >= :since)
      and (cast(:until as timestamptz) is null or u.as_of < :until)
    order by u.as_of, u.external_subscription_id, u.period_start
"""

_WALLET_TRANSACTIONS = """
    select t.id as transaction_id, c.external_id as external_customer_id,
           w.code as wallet_code, w.currency, t.direction, t.status, t.source, t.credits,
           t.granted_credits, t.amount_cents, s.external_id as external_subscription_id,
           t.period_start, t.as_of, t.created_at, t.settled_at, t.idempotency_key, t.note
    from wallet_transactions t
    join wallets w on w.id = t.wallet_id
    join customers c on c.id = t.customer_id
    left join subscriptions s on s.id = t.subscription_id
    where (cast(:customer as text) is null or c.external_id = :customer)
      and (cast(:subscription as text) is null or s.external_id = :subscription)
      and (cast(:since as timestamptz) is null or t.as_of >= :since)
      and (cast(:until as timestamptz) is null or t.as_of < :until)
    order by t.id
"""

_INVOICES = """
    select i.lago_id, i.number, i.sequential_id, c.external_id as external_customer_id,
           i.invoice_type, i.issuing_date, i.status, i.payment_status, i.currency,
           i.fees_amount_cents, i.taxes_amount_cents, i.prepaid_credit_amount_cents,
           i.total_amount_cents, i.payment_due_date, i.finalized_at
    from invoices i
    join customers c on c.id = i.customer_id
    where (cast(:customer as text) is null or c.external_id = :customer)
      and (cast(:subscription as text) is null or exists (
             select 1 from invoice_subscriptions x join subscriptions s on s.id = x.subscription_id
             where x.invoice_id = i.id and s.external_id = :subscription)
           or exists (  -- a start invoice paid in advance: its fee only
             select 1 from invoice_fees x join subscriptions s on s.id = x.subscription_id
             where x.invoice_id = i.id and s.external_id = :subscription))
      and (cast(:since as timestamptz) is null or i.issuing_date >= cast(:since as date))
      and (cast(:until as timestamptz) is null or i.issuing_date < cast(:until as date))
    order by i.issuing_date, i.id
"""

QUERIES: dict[str, str] = {
    "usage": _USAGE,
    "wallet-transactions": _WALLET_TRANSACTIONS,
    "invoices": _INVOICES,
}


def frame(engine: Engine, what: str, filters: Filters = Filters()) -> pd.DataFrame:
    """One history as a DataFrame; money columns hold ``Decimal`` values."""
    import pandas as pd

    if what not in QUERIES:
        raise UserError(f"unknown export {what!r}", hint=f"one of: {', '.join(QUERIES)}",
                        exit_code=2)
    params = {"customer": filters.customer, "subscription": filters.subscription,
              "since": filters.since, "until": filters.until}
    with engine.connect() as conn:
        return pd.read_sql(text(QUERIES[what]), conn, params=params, coerce_float=False)


def _decimal_columns(df: pd.DataFrame) -> list[str]:
    return [
        name for name in df.columns
        if df[name].dtype == object and df[name].map(lambda v: isinstance(v, Decimal)).any()
    ]


def _to_csv(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for name in _decimal_columns(out):
        out[name] = out[name].map(lambda v: format(v, "f") if isinstance(v, Decimal) else v)
    out.to_csv(path, index=False)


def _to_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for name in df.columns:
        if name in _decimal_columns(df):
            values = [v.as_tuple() for v in df[name] if isinstance(v, Decimal)]
            scale = max((max(0, -int(v.exponent)) for v in values), default=0)
            whole = max((max(1, len(v.digits) + int(v.exponent)) for v in values), default=1)
            if whole + scale > 38:
                raise UserError(f"column {name!r} needs more than 38 digits",
                                hint="export to .csv, which keeps every digit")
            fields.append(pa.field(name, pa.decimal128(max(whole + scale, 18), scale)))
        else:
            fields.append(pa.field(name, pa.Schema.from_pandas(df[[name]],
                                                               preserve_index=False).field(0).type))
    pq.write_table(pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False), path)


WRITERS: dict[str, Callable[[Any, Path], None]] = {".csv": _to_csv, ".parquet": _to_parquet}


def export(engine: Engine, what: str, path: Path, filters: Filters = Filters()) -> int:
    """Write one history to ``path`` (format from its suffix); returns the number of rows."""
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise UserError(f"cannot write {path.name!r}: unknown file type {path.suffix!r}",
                        hint="name the file .csv or .parquet", exit_code=2)
    if not path.parent.exists():
        raise UserError(f"folder {str(path.parent)!r} does not exist",
                        hint="create it, or write the file somewhere else")
    df = frame(engine, what, filters)
    writer(df, path)
    return len(df)
