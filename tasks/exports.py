"""Warehouse-ready history: usage by charge, filter and group, wallet transactions, invoices and
events, as CSV or Parquet with one fixed schema per export (docs/operations.md, "Exporting
history").

Each export's columns are declared once (:data:`COLUMNS`) and used for both formats, so two
exports of different data have the same schema and an empty export is typed. Money is exact:
rounded money (cents, credits) is ``decimal128(38, 12)`` (:data:`MONEY`); units and unrounded
precise amounts carry every digit rating keeps (docs/architecture.md §7: below 10^25 with up to
26 fractional digits per value, a sum of a billion such values below 10^34) and are
``decimal256(76, 38)`` (:data:`NUMBER`). A value that does not fit its type is refused with the
row and column named, never rounded. CSV writes the same columns, a header even when empty, and
decimals as their exact text.

The events export is incremental: rows are events whose ``id`` (the ingestion order) is above a
watermark, and the new watermark is returned; so is the event-voids export (``event_voids``'
``id``), which carries the voids of events exported before they were voided. A watermark is
capped so that no row at or below it can still appear: ids are taken inside transactions, which
may commit out of order, so the export waits for the transactions that could still hold an id
at or below the cap (:func:`events_watermark`).

pyarrow and pandas are imported inside the functions, so no other command pays for them.
Queries are parameterised; filters are values, never SQL text.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.models.lago.results import ExportWritten
from tallyflow.models.rating.money import WIDE

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@dataclass(frozen=True)
class Filters:
    """What to export: one customer, one subscription, a time window (half-open) on each
    history's own business time: a snapshot's ``as_of``, a transaction's ``as_of`` (the hour
    its run was for), an invoice's issuing date. The events export takes no time window: it
    is incremental by watermark (``after``)."""

    customer: str | None = None
    subscription: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None


@dataclass(frozen=True)
class Decimals:
    """A fixed decimal type: ``precision`` digits, ``scale`` of them after the point."""

    precision: int
    scale: int

    @property
    def arrow(self) -> str:
        width = 128 if self.precision <= 38 else 256
        return f"decimal{width}({self.precision}, {self.scale})"


MONEY: Final = Decimals(38, 12)
"""Rounded money: amounts in cents, credits, totals."""
NUMBER: Final = Decimals(76, 38)
"""Units, unrounded precise amounts, an event's ``precise_total_amount_cents``."""

Kind = str  # "text" | "int" | "timestamp" | "date" | "money" | "number"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True


def _cols(spec: str) -> tuple[Column, ...]:
    """``"name:kind name:kind!"``: ``!`` marks a column that is never null."""
    out = []
    for item in spec.split():
        name, kind = item.split(":")
        out.append(Column(name, kind.rstrip("!"), nullable=not kind.endswith("!")))
    return tuple(out)


COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "usage": _cols(
        "external_customer_id:text! external_subscription_id:text! period_start:timestamp! "
        "period_end:timestamp! as_of:timestamp! currency:text! charge_lago_id:text! "
        "charge_model:text billable_metric_code:text aggregation_type:text "
        "charge_invoice_display_name:text filter_values:text filter_invoice_display_name:text "
        "grouped_by:text units:number! events_count:int! amount_cents:money! "
        "precise_amount_cents:number!"
    ),
    "wallet-transactions": _cols(
        "transaction_id:int! external_customer_id:text! wallet_code:text currency:text! "
        "direction:text! status:text! source:text! credits:money! granted_credits:money! "
        "amount_cents:money! external_subscription_id:text period_start:timestamp "
        "as_of:timestamp! created_at:timestamp! settled_at:timestamp idempotency_key:text! "
        "note:text"
    ),
    "invoices": _cols(
        "lago_id:text! number:text sequential_id:int external_customer_id:text! "
        "invoice_type:text! issuing_date:date! status:text! payment_status:text! currency:text! "
        "fees_amount_cents:money! taxes_amount_cents:money! prepaid_credit_amount_cents:money! "
        "total_amount_cents:money! payment_due_date:date finalized_at:timestamp"
    ),
    "events": _cols(
        "event_id:int! external_subscription_id:text! transaction_id:text! code:text! "
        "timestamp:timestamp! properties:text! precise_total_amount_cents:number "
        "object_id:int! row_number:int! sub_index:int! ingested_at:timestamp! "
        "voided_at:timestamp"
    ),
    "event-voids": _cols(
        "void_id:int! event_id:int! external_subscription_id:text! transaction_id:text! "
        "code:text! timestamp:timestamp! object_id:int! row_number:int! actor:text! "
        "reason:text! voided_at:timestamp!"
    ),
}

# The columns naming a row in an error (with its position in the export).
_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "usage": ("external_subscription_id", "as_of", "charge_lago_id"),
    "wallet-transactions": ("transaction_id",),
    "invoices": ("lago_id",),
    "events": ("event_id",),
    "event-voids": ("void_id",),
}

_USAGE = """
    select c.external_id as external_customer_id, u.external_subscription_id,
           u.period_start, u.period_end, u.as_of, u.currency, u.usage::text as usage
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

# The one-subscription and one-customer filter of the event exports, on a table (its alias
# ``t``) carrying ``external_subscription_id``: an event names its subscription, not its
# customer, so the customer is found through the subscription rows. Formatted with a constant
# alias below; the values stay bound parameters.
_BY_SUBSCRIPTION = """\
      and (cast(:subscription as text) is null or {t}.external_subscription_id = :subscription)
      and (cast(:customer as text) is null or exists (
             select 1 from subscriptions s join customers c on c.id = s.customer_id
             where s.external_id = {t}.external_subscription_id and c.external_id = :customer))
"""

_EVENTS = """
    select e.id as event_id, e.external_subscription_id, e.transaction_id, e.code,
           e."timestamp", e.properties::text as properties, e.precise_total_amount_cents,
           e.object_id, e.row_number, e.sub_index, e.ingested_at, e.voided_at
    from events e
    where e.id > :after and e.id <= :cap
""" + _BY_SUBSCRIPTION.format(t="e") + """    order by e.id
"""  # noqa: S608 - fixed text

_EVENT_VOIDS = """
    select v.id as void_id, v.event_id, v.external_subscription_id, v.transaction_id, v.code,
           v."timestamp", v.object_id, v.row_number, v.actor, v.reason, v.voided_at
    from event_voids v
    where v.id > :after and v.id <= :cap
""" + _BY_SUBSCRIPTION.format(t="v") + """    order by v.id
"""  # noqa: S608 - fixed text

QUERIES: Final[dict[str, str]] = {
    "usage": _USAGE,
    "wallet-transactions": _WALLET_TRANSACTIONS,
    "invoices": _INVOICES,
    "events": _EVENTS,
    "event-voids": _EVENT_VOIDS,
}

# The incremental exports and the table whose ``id`` (its insert order) is their watermark.
INCREMENTAL: Final[dict[str, str]] = {"events": "events", "event-voids": "event_voids"}

# --------------------------------------------------------------------------------------------
# The events watermark
# --------------------------------------------------------------------------------------------

# The last id the table's identity sequence handed out (0 before the first).
_LAST_ID = """
    select coalesce(pg_sequence_last_value(
        cast(pg_get_serial_sequence(:table, 'id') as regclass)), 0)
"""
# Transactions that have written to the table and not ended. An insert takes this lock when
# its statement starts, before the identity default hands out an id, and keeps it to the end.
_WRITERS = """
    select coalesce(array_agg(distinct virtualtransaction), cast('{}' as text[]))
    from pg_locks
    where locktype = 'relation' and relation = cast(:table as regclass)
      and database = (select oid from pg_database where datname = current_database())
      and mode = 'RowExclusiveLock' and granted and pid <> pg_backend_pid()
"""
_STILL_OPEN = """
    select count(*) from pg_locks
    where locktype = 'virtualxid' and granted and virtualxid = any(:held)
"""


def events_watermark(conn: Connection, table: str = "events",
                     timeout_seconds: float = 300.0) -> int:
    """An id of ``table`` (``events`` or ``event_voids``) at or below which every row that will
    ever be visible is visible now.

    The cap is the last id handed out; any transaction that took an id at or below it and has
    not ended was writing to the table before the cap was read, so it is among the writers
    read next. The function waits for those (as long as one object's ingest or one void takes)
    and returns the cap; later transactions take larger ids."""
    if table not in INCREMENTAL.values():
        raise ValueError(f"no watermark for {table!r}")
    cap = int(conn.execute(text(_LAST_ID), {"table": table}).scalar_one())
    held = list(conn.execute(text(_WRITERS), {"table": table}).scalar_one())
    deadline = time.monotonic() + timeout_seconds
    while held and conn.execute(text(_STILL_OPEN), {"held": held}).scalar_one():
        if time.monotonic() > deadline:
            raise UserError(
                f"transactions writing {table} have been open for over {timeout_seconds:.0f}s",
                hint="an ingest is still running or a session is idle in a transaction; run "
                     "the export again when it has ended")
        time.sleep(0.05)
    return cap


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


def _canonical(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def usage_rows(snapshot: Mapping[str, Any], usage: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per charge, filter bucket and pricing group of a snapshot's stored usage
    (Lago's ``charges_usage``): the leaves, so the rows of a snapshot sum to its total.

    A charge with pricing groups gives a row per group (per group and filter when it also has
    filters), a charge with filters a row per filter bucket (the default bucket has no
    ``filter_values``), any other charge one row."""
    for charge in usage.get("charges_usage", []):
        info = charge.get("charge") or {}
        metric = charge.get("billable_metric") or {}
        base = {
            **snapshot,
            "charge_lago_id": str(info.get("lago_id")),
            "charge_model": info.get("charge_model"),
            "billable_metric_code": metric.get("code"),
            "aggregation_type": metric.get("aggregation_type"),
            "charge_invoice_display_name": info.get("invoice_display_name"),
        }
        leaves: list[tuple[Mapping[str, Any], Mapping[str, Any] | None, Any]] = []
        if charge.get("grouped_usage"):
            for group in charge["grouped_usage"]:
                for bucket in group.get("filters") or [None]:
                    leaves.append((bucket or group, bucket, group.get("grouped_by")))
        elif charge.get("filters"):
            leaves = [(bucket, bucket, None) for bucket in charge["filters"]]
        else:
            leaves = [(charge, None, None)]
        for line, bucket, grouped_by in leaves:
            yield {
                **base,
                "filter_values": _canonical(bucket.get("values")) if bucket else None,
                "filter_invoice_display_name":
                    bucket.get("invoice_display_name") if bucket else None,
                "grouped_by": _canonical(grouped_by),
                "units": line["units"],
                "events_count": line["events_count"],
                "amount_cents": line["amount_cents"],
                "precise_amount_cents": line["precise_amount_cents"],
            }


def _records(conn: Connection, what: str, filters: Filters, cap: int) -> Iterator[dict[str, Any]]:
    params = {"customer": filters.customer, "subscription": filters.subscription,
              "since": filters.since, "until": filters.until,
              "after": filters.after or 0, "cap": cap}
    result = conn.execution_options(stream_results=True, yield_per=5_000).execute(
        text(QUERIES[what]), params)
    for row in result.mappings():
        if what != "usage":
            yield dict(row)
            continue
        snapshot = {k: row[k] for k in ("external_customer_id", "external_subscription_id",
                                        "period_start", "period_end", "as_of", "currency")}
        # numbers parsed exactly: the stored JSON writes any digits (number_rule.dumps)
        yield from usage_rows(snapshot, json.loads(row["usage"], parse_float=Decimal))


def _fits(value: Any, kind: Decimals) -> Decimal | None:
    """``value`` as a Decimal of ``kind``'s scale, or None if it does not fit exactly."""
    try:
        number = Decimal(value) if isinstance(value, int | str | Decimal) else None
        if number is None or not number.is_finite():
            return None
        fixed = number.quantize(Decimal(1).scaleb(-kind.scale), context=WIDE)
    except (InvalidOperation, ValueError):
        return None
    if fixed != number or len(fixed.as_tuple().digits) > kind.precision:
        return None
    return fixed


def _typed(what: str, position: int, row: Mapping[str, Any]) -> dict[str, object]:
    """One row with every column of the export, each value of its column's type."""
    out: dict[str, Any] = {}
    for column in COLUMNS[what]:
        value = row.get(column.name)
        if value is None:
            if not column.nullable:
                _refuse(what, position, row, column, value, "is null")
            out[column.name] = None
            continue
        if column.kind in ("money", "number"):
            kind = MONEY if column.kind == "money" else NUMBER
            fixed = _fits(value, kind)
            if fixed is None:
                _refuse(what, position, row, column, value, f"does not fit {kind.arrow}")
            out[column.name] = fixed
        elif column.kind == "int":
            out[column.name] = int(value)
        elif column.kind == "text":
            out[column.name] = str(value)
        else:
            out[column.name] = value
    return out


def _refuse(what: str, position: int, row: Mapping[str, Any], column: Column, value: Any,
            problem: str) -> None:
    key = ", ".join(f"{k}={row.get(k)}" for k in _KEYS[what])
    shown = format(value, "f") if isinstance(value, Decimal) else str(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise UserError(
        f"{what} export, row {position} ({key}): {column.name} {shown} {problem}",
        hint="nothing was written; the value is kept exactly in the database (tallyflow usage, "
             "tallyflow invoices show it)")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def schema(what: str) -> pa.Schema:
    """The export's fixed Arrow schema (the Parquet file's; CSV has the same columns)."""
    import pyarrow as pa

    types: dict[str, Callable[[], pa.DataType]] = {
        "text": pa.string, "int": pa.int64, "date": pa.date32,
        "timestamp": lambda: pa.timestamp("us", tz="UTC"),
        "money": lambda: pa.decimal128(MONEY.precision, MONEY.scale),
        "number": lambda: pa.decimal256(NUMBER.precision, NUMBER.scale),
    }
    return pa.schema([pa.field(c.name, types[c.kind](), nullable=c.nullable)
                      for c in COLUMNS[_known(what)]])


def _known(what: str) -> str:
    if what not in QUERIES:
        raise UserError(f"unknown export {what!r}", hint=f"one of: {', '.join(QUERIES)}",
                        exit_code=2)
    return what


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(WIDE) if value else Decimal(0), "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _batches(rows: Iterable[dict[str, Any]], size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_csv(what: str, rows: Iterable[dict[str, Any]], path: Path) -> None:
    names = [c.name for c in COLUMNS[what]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow([_csv_text(row[name]) for name in names])


def _write_parquet(what: str, rows: Iterable[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fixed = schema(what)
    with pq.ParquetWriter(path, fixed) as writer:
        empty = True
        for batch in _batches(rows):
            writer.write_table(pa.Table.from_pylist(batch, schema=fixed))
            empty = False
        if empty:  # the schema is the file's either way; a row group makes it plain
            writer.write_table(fixed.empty_table())


WRITERS: Final[dict[str, Callable[[str, Iterable[dict[str, Any]], Path], None]]] = {
    ".csv": _write_csv, ".parquet": _write_parquet,
}


@dataclass(frozen=True)
class Written:
    """What an export wrote; ``watermark`` (incremental exports only) is the next run's
    ``after``."""

    what: str
    path: Path
    rows: int
    watermark: int | None = None

    def as_dict(self) -> ExportWritten:
        return {"export": self.what, "file": str(self.path), "rows": self.rows,
                "watermark": self.watermark}


def _checked(what: str, filters: Filters) -> None:
    _known(what)
    if what in INCREMENTAL and (filters.since or filters.until):
        raise UserError(f"the {what} export takes no time window",
                        hint="it is incremental: --since the watermark the last export "
                             "printed (or 0, or nothing, for every event)", exit_code=2)
    if what not in INCREMENTAL and filters.after is not None:
        raise UserError(f"a watermark is for the events and event-voids exports, not {what!r}",
                        hint="--since is a time for this export", exit_code=2)
    if filters.after is not None and filters.after < 0:
        raise UserError(f"watermark {filters.after} is negative",
                        hint="use the number the last events export printed", exit_code=2)


def _open(conn: Connection, what: str, filters: Filters) -> tuple[Iterator[dict[str, Any]],
                                                                 int | None]:
    """The typed rows of one export, streamed, and the events watermark (None for others)."""
    _checked(what, filters)
    cap, watermark = 0, None
    if what in INCREMENTAL:
        cap = events_watermark(conn, INCREMENTAL[what])
        watermark = max(cap, filters.after or 0)
        conn.commit()
    typed = (_typed(what, position, record)
             for position, record in enumerate(_records(conn, what, filters, cap), start=1))
    return typed, watermark


def rows(engine: Engine, what: str,
         filters: Filters = Filters()) -> tuple[list[dict[str, Any]], int | None]:
    """Every row of one export, typed, and the events watermark (None for the others)."""
    with engine.connect() as conn:
        typed, watermark = _open(conn, what, filters)
        return list(typed), watermark


def table(engine: Engine, what: str, filters: Filters = Filters()) -> pa.Table:
    """One export as an Arrow table of its fixed schema."""
    import pyarrow as pa

    data, _ = rows(engine, what, filters)
    return pa.Table.from_pylist(data, schema=schema(what))


def frame(engine: Engine, what: str, filters: Filters = Filters()) -> pd.DataFrame:
    """One export as a DataFrame; decimal columns hold ``Decimal`` values."""
    return table(engine, what, filters).to_pandas()


def export(engine: Engine, what: str, path: Path, filters: Filters = Filters()) -> Written:
    """Write one export to ``path`` (format from its suffix). The file appears whole or not at
    all: it is written beside and renamed, so a refused value leaves no file."""
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise UserError(f"cannot write {path.name!r}: unknown file type {path.suffix!r}",
                        hint="name the file .csv or .parquet", exit_code=2)
    if not path.parent.exists():
        raise UserError(f"folder {str(path.parent)!r} does not exist",
                        hint="create it, or write the file somewhere else")
    _checked(what, filters)
    partial = path.with_name(f".{path.name}.partial")
    count = 0

    def counted(typed: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal count
        for row in typed:
            count += 1
            yield row

    try:
        with engine.connect() as conn:
            typed, watermark = _open(conn, what, filters)
            writer(what, counted(typed), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return Written(what, path, count, watermark)


__all__: Sequence[str] = [
    "COLUMNS", "INCREMENTAL", "MONEY", "NUMBER", "Filters", "Written", "events_watermark",
    "export", "frame", "rows", "schema", "table", "usage_rows",
]
