"""Warehouse-ready exports: one fixed schema per export (typed when empty), exact money in CSV
and Parquet, usage rows per charge, filter and group summing to the snapshot, loud refusal of a
value that does not fit, and the incremental events export (no gap, no repeat)."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from tallyflow.errors import UserError
from tallyflow.tasks.corrections.voids import EventKey, void_events
from tallyflow.tasks.exports import (
    COLUMNS,
    MONEY,
    NUMBER,
    WRITERS,
    Filters,
    _typed,
    export,
    frame,
    rows,
    schema,
    usage_rows,
)
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    usage_events,
)
from tests.tasks.rating_fixtures import apply_mistral, ingest_events, load_rows, token_event

EXPORTS = list(COLUMNS)


@pytest.fixture
def billed(engine: Engine, tmp_path: Path) -> Engine:
    """A month of Mistral usage for acme, its hourly snapshots and wallet deductions, and its
    finalized invoice (the invoicing tests' scenario)."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    hour(engine, CLOSE)
    return engine


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.parametrize("what", EXPORTS)
def test_schema_is_fixed_empty_or_not(engine: Engine, tmp_path: Path, what: str) -> None:
    """The same schema before any data (typed, no null type) and after a billed month, and the
    CSV header either way."""
    names = [c.name for c in COLUMNS[what]]
    empty = tmp_path / "empty.parquet"
    assert export(engine, what, empty).rows == 0
    first = pq.read_schema(empty)
    assert first == schema(what)
    assert not any(pa.types.is_null(f.type) for f in first)
    assert export(engine, what, tmp_path / "empty.csv").rows == 0
    assert _read_csv(tmp_path / "empty.csv") == (names, [])

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    void = void_events(engine, [EventKey("sub_acme_001", "e2")], "test", "a duplicate")
    assert [str(o.outcome) for o in void.outcomes] == ["voided"]
    hour(engine, CLOSE)
    full = tmp_path / "full.parquet"
    assert export(engine, what, full).rows > 0
    assert pq.read_schema(full) == first
    assert pq.read_table(full).num_rows > 0
    export(engine, what, tmp_path / "full.csv")
    header, read = _read_csv(tmp_path / "full.csv")
    assert header == names and read


@pytest.mark.parametrize(
    ("what", "money"),
    [
        ("usage", ["amount_cents", "precise_amount_cents", "units"]),
        ("wallet-transactions", ["amount_cents", "credits", "granted_credits"]),
        ("invoices", ["total_amount_cents", "prepaid_credit_amount_cents", "fees_amount_cents"]),
    ],
)
def test_csv_and_parquet_hold_the_same_exact_decimals(billed: Engine, tmp_path: Path, what: str,
                                                      money: list[str]) -> None:
    written = export(billed, what, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    export(billed, what, tmp_path / "out.csv")
    _, read = _read_csv(tmp_path / "out.csv")
    assert written.rows == table.num_rows == len(read) > 0
    for name in money:
        wanted = pa.decimal128(38, 12) if any(
            c.name == name and c.kind == "money" for c in COLUMNS[what]) else pa.decimal256(76, 38)
        assert table.schema.field(name).type == wanted
        assert table.column(name).to_pylist() == [Decimal(r[name]) for r in read]


def test_money_matches_the_ledger_and_the_invoice(billed: Engine) -> None:
    ledger = frame(billed, "wallet-transactions")
    with billed.connect() as conn:
        balance = conn.execute(text("select sum(balance_cents) from wallet_balances")).scalar_one()
    signed = sum(
        (a if d == "inbound" else -a)
        for a, d, s in zip(ledger["amount_cents"], ledger["direction"], ledger["status"],
                           strict=True)
        if s == "settled"
    )
    assert signed == balance == Decimal(12500 - 4680)
    invoices = frame(billed, "invoices")
    assert list(invoices["total_amount_cents"]) == [Decimal(0)]
    assert list(invoices["prepaid_credit_amount_cents"]) == [Decimal(4680)]


def _groups_and_a_plain_charge(plan: dict[str, Any]) -> None:
    tokens = plan["charges"][0]
    tokens["properties"] = {"amount": "5", "package_size": 1_000_000, "free_units": 0,
                            "pricing_group_keys": ["team"]}
    plan["charges"].append({"billable_metric_id": "mistral_tokens", "charge_model": "standard",
                            "invoice_display_name": "Tokens, all models",
                            "properties": {"amount": "0.0000013"}})


def _only_filters(plan: dict[str, Any]) -> None:
    pass


@pytest.mark.parametrize(
    ("edit", "teams", "leaves"),
    [
        # six filters + the default bucket, one charge
        (_only_filters, [None], {("filters", None): 7}),
        # per team, the filters it used (a group lists the buckets it has usage in); the
        # plain charge one row
        (_groups_and_a_plain_charge, ["red", "blue"],
         {("filters", '{"team":"blue"}'): 2, ("filters", '{"team":"red"}'): 2,
          ("plain", None): 1}),
    ],
)
def test_usage_rows_per_charge_filter_and_group_sum_to_the_snapshot(
    engine: Engine, tmp_path: Path, edit: Callable[[dict[str, Any]], None],
    teams: list[str | None], leaves: dict[tuple[str, str | None], int],
) -> None:
    apply_mistral(engine, tmp_path, plan=edit)
    when = datetime(2025, 3, 10, 12, tzinfo=UTC)
    events = []
    for n, (model, kind) in enumerate([("mistral-small", "input"), ("mistral-large", "output"),
                                       ("mistral-small", "input")]):
        for team in teams:
            event = token_event(f"t{n}-{team}", when + timedelta(minutes=n), 1_234_567 * (n + 1),
                                model=model, kind=kind)
            if team:
                event["properties"]["team"] = team
            events.append(event)
    ingest_events(engine, tmp_path, events)
    hour(engine, datetime(2025, 3, 20, 12, tzinfo=UTC))
    out = tmp_path / "usage.parquet"
    export(engine, "usage", out)
    got = pq.read_table(out).to_pylist()
    with engine.connect() as conn:
        snapshots = conn.execute(text(
            "select as_of, amount_cents, precise_amount_cents, events_count from usage_snapshots"
        )).all()
    assert len(snapshots) == 1
    shape: dict[tuple[str, str | None], int] = {}
    for row in got:
        kind = "plain" if row["charge_invoice_display_name"] == "Tokens, all models" else "filters"
        shape[(kind, row["grouped_by"])] = shape.get((kind, row["grouped_by"]), 0) + 1
    assert shape == leaves
    snapshot = snapshots[0]
    assert sum(r["amount_cents"] for r in got) == snapshot.amount_cents > 0
    assert sum(r["precise_amount_cents"] for r in got) == snapshot.precise_amount_cents
    assert sum(r["events_count"] for r in got) == snapshot.events_count
    for charge in {r["charge_lago_id"] for r in got}:  # each charge counts every event
        assert sum(r["events_count"] for r in got if r["charge_lago_id"] == charge) \
            == len(events)
    # the tokens charge's units, every row of it, are the tokens ingested
    tokens = sum(e["properties"]["tokens"] for e in events)
    assert sum(r["units"] for r in got if r["charge_invoice_display_name"] == "AI Tokens") \
        == tokens
    matched = [r for r in got if r["filter_values"] == '{"model":["mistral-small"],'
               '"type":["input"]}']
    assert {r["units"] for r in matched} == {Decimal(1_234_567 + 3 * 1_234_567)}


BIGGEST_MONEY = Decimal("9" * 26 + "." + "9" * 12)
BIGGEST_NUMBER = Decimal("9" * 38 + "." + "9" * 38)
# the number rule's bound (docs/architecture.md §7): a value, and a billion of them summed
RULE_VALUE = Decimal("9" * 25 + "." + "9" * 26)
RULE_SUM = Decimal("9" * 34 + "." + "9" * 26)  # below a billion times RULE_VALUE


def _usage_row(**values: Any) -> dict[str, Any]:
    moment = datetime(2025, 3, 1, tzinfo=UTC)
    row: dict[str, Any] = {
        "external_customer_id": "acme", "external_subscription_id": "s", "period_start": moment,
        "period_end": moment, "as_of": moment, "currency": "USD", "charge_lago_id": "1",
        "units": 0, "events_count": 0, "amount_cents": 0, "precise_amount_cents": 0,
    }
    return {**row, **values}


@pytest.mark.parametrize(
    "values",
    [
        {"amount_cents": BIGGEST_MONEY, "units": BIGGEST_NUMBER,
         "precise_amount_cents": BIGGEST_NUMBER.copy_negate()},
        {"amount_cents": BIGGEST_MONEY.copy_negate(), "units": RULE_SUM,
         "precise_amount_cents": RULE_VALUE},
        {"amount_cents": Decimal("0.000000000001"), "units": "1E-38",
         "precise_amount_cents": Decimal("1.50000000000000000000000000000000000000000")},
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_bound_values_round_trip_exactly(tmp_path: Path, values: dict[str, Any],
                                         suffix: str) -> None:
    path = tmp_path / f"bound{suffix}"
    WRITERS[suffix]("usage", [_typed("usage", 1, _usage_row(**values))], path)
    if suffix == ".parquet":
        back = pq.read_table(path).to_pylist()[0]
    else:
        back = {k: Decimal(v) for k, v in _read_csv(path)[1][0].items() if k in values}
    for name, value in values.items():
        assert back[name] == Decimal(value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"amount_cents": Decimal("1" + "0" * 26)}, r"amount_cents 1000.* does not fit decimal128"),
        ({"amount_cents": Decimal("1E-13")}, r"amount_cents 0.0000000000001 does not fit"),
        ({"units": Decimal("-1" + "0" * 38)}, r"units -1000.* does not fit decimal256\(76, 38\)"),
        ({"precise_amount_cents": Decimal("1E-39")}, r"precise_amount_cents 0.0{38}1 does not fit"),
        ({"units": "NaN"}, r"units NaN does not fit"),
        ({"units": None}, r"units None is null"),
    ],
)
def test_a_value_that_does_not_fit_is_refused_naming_its_row(values: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(UserError, match=r"usage export, row 7 \(external_subscription_id=s, "
                       r"as_of=2025-03-01 00:00:00\+00:00, charge_lago_id=1\): " + message):
        _typed("usage", 7, _usage_row(**values))


def test_a_refused_value_leaves_no_file(engine: Engine, tmp_path: Path) -> None:
    load_rows(engine, [{"sub": "s", "txn": "t", "code": "c", "ts": "2025-03-01T00:00:00Z",
                        "properties": {}}])
    with engine.begin() as conn:
        conn.execute(text("update events set precise_total_amount_cents = 1e40"))
    out = tmp_path / "events.parquet"
    with pytest.raises(UserError, match=r"events export, row 1 \(event_id=1\): "
                                        r"precise_total_amount_cents"):
        export(engine, "events", out)
    assert list(tmp_path.iterdir()) == []


def _event_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("select id from events order by id")).scalars())


def test_events_export_is_incremental_with_no_gap_and_no_repeat(engine: Engine,
                                                                 tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    when = datetime(2025, 3, 10, 12, tzinfo=UTC)
    exported: list[int] = []
    watermarks: list[int] = []
    after: int | None = None
    voids: list[str] = []
    voids_after: int | None = None
    for run, batch in enumerate([3, 0, 2]):
        if batch:
            ingest_events(engine, tmp_path, [token_event(f"r{run}-{n}", when, 10 + n)
                                             for n in range(batch)])
        if run == 1:  # an event exported in run 0 is voided
            void_events(engine, [EventKey("sub_acme_001", "r0-0")], "test", "duplicate")
        if run == 2:  # and one of this run's, before its export
            void_events(engine, [EventKey("sub_acme_001", "r2-1")], "test", "duplicate")
        out = tmp_path / f"events-{run}.parquet"
        done = export(engine, "events", out, Filters(after=after))
        table = pq.read_table(out)
        assert table.schema == schema("events")
        assert done.rows == table.num_rows == batch
        exported += table.column("event_id").to_pylist()
        watermarks.append(done.watermark or 0)
        after = done.watermark
        if run == 2:
            voided = {r["transaction_id"]: r["voided_at"] for r in table.to_pylist()}
            assert voided["r2-1"] is not None and voided["r2-0"] is None
        out = tmp_path / f"voids-{run}.csv"
        done = export(engine, "event-voids", out, Filters(after=voids_after))
        voids += [r["transaction_id"] for r in _read_csv(out)[1]]
        voids_after = done.watermark
    assert exported == _event_ids(engine)  # every event, once, in ingestion order
    assert watermarks == [3, 3, 5]
    assert voids == ["r0-0", "r2-1"]  # every void, once: the warehouse applies them


def test_an_event_committed_late_with_a_lower_id_is_not_skipped(engine: Engine) -> None:
    """Ids are taken inside ingest transactions, which may commit out of order: the export
    waits for the open one, so its event is in this export rather than lost below the
    watermark."""
    load_rows(engine, [])
    late = engine.connect()
    late.begin()
    late.execute(text("""insert into events (external_subscription_id, transaction_id, code,
                       "timestamp", properties, object_id, row_number)
                       values ('s', 'late', 'c', now(), '{}', 1, 0)"""))
    load_rows(engine, [{"sub": "s", "txn": "early", "code": "c", "ts": "2025-03-01T00:00:00Z",
                        "properties": {}}])
    timer = threading.Timer(0.5, late.commit)
    timer.start()
    try:
        data, watermark = rows(engine, "events")
    finally:
        timer.join()
        late.close()
    assert [(r["event_id"], r["transaction_id"]) for r in data] == [(1, "late"), (2, "early")]
    assert watermark == 2


@pytest.mark.parametrize(
    ("what", "filters", "message"),
    [
        ("events", Filters(since=datetime(2025, 1, 1, tzinfo=UTC)), "takes no time window"),
        ("usage", Filters(after=3), "a watermark is for the events and event-voids exports"),
        ("event-voids", Filters(until=datetime(2025, 1, 1, tzinfo=UTC)),
         "the event-voids export takes no time window"),
        ("events", Filters(after=-1), "watermark -1 is negative"),
    ],
)
def test_events_filters_are_checked(engine: Engine, what: str, filters: Filters,
                                    message: str) -> None:
    with pytest.raises(UserError, match=message):
        rows(engine, what, filters)


def test_filters_are_values(billed: Engine) -> None:
    assert len(frame(billed, "usage", Filters(customer="nobody"))) == 0
    assert len(frame(billed, "usage", Filters(customer="acme' or '1'='1"))) == 0
    assert len(frame(billed, "usage", Filters(subscription="sub_acme_001"))) > 0
    assert len(frame(billed, "events", Filters(customer="acme"))) == 2
    assert len(frame(billed, "events", Filters(subscription="nobody"))) == 0
    late = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(frame(billed, "wallet-transactions", Filters(since=late))) == 0
    assert len(frame(billed, "invoices", Filters(until=datetime(2025, 4, 1, tzinfo=UTC)))) == 0
    assert len(frame(billed, "invoices", Filters(since=datetime(2025, 4, 1, tzinfo=UTC)))) == 1


@pytest.mark.parametrize(
    ("what", "name", "message"),
    [
        ("ledger", "out.csv", "unknown export 'ledger'"),
        ("usage", "out.xlsx", "unknown file type '.xlsx'"),
        ("usage", "missing/out.csv", "does not exist"),
    ],
)
def test_mistakes_are_one_line_errors(engine: Engine, tmp_path: Path, what: str, name: str,
                                      message: str) -> None:
    with pytest.raises(UserError, match=message):
        export(engine, what, tmp_path / name)


def test_the_declared_types(engine: Engine) -> None:
    assert (MONEY.arrow, NUMBER.arrow) == ("decimal128(38, 12)", "decimal256(76, 38)")
    assert schema("usage").field("units").type == pa.decimal256(76, 38)
    assert schema("usage").field("amount_cents").type == pa.decimal128(38, 12)


def _line(units: str, cents: int) -> dict[str, Any]:
    return {"units": units, "events_count": 1, "amount_cents": cents,
            "precise_amount_cents": str(cents)}


_CHARGE = {"charge": {"lago_id": "7", "charge_model": "standard", "invoice_display_name": "T"},
           "billable_metric": {"code": "tokens", "aggregation_type": "sum_agg"}}


@pytest.mark.parametrize(
    ("charge", "leaves"),
    [
        # no filter, no group: the charge's own line
        ({**_line("5", 10), "filters": [], "grouped_usage": []}, [(None, None, "5")]),
        # filters: a row per bucket, the default one without values
        ({**_line("5", 10), "grouped_usage": [],
          "filters": [{**_line("2", 4), "values": {"m": ["a"]}, "invoice_display_name": "A"},
                      {**_line("3", 6), "values": None, "invoice_display_name": None}]},
         [('{"m":["a"]}', None, "2"), (None, None, "3")]),
        # groups without filters: a row per group
        ({**_line("5", 10), "filters": [],
          "grouped_usage": [{**_line("1", 2), "grouped_by": {"t": "x"}, "filters": []},
                            {**_line("4", 8), "grouped_by": {"t": None}, "filters": []}]},
         [(None, '{"t":"x"}', "1"), (None, '{"t":null}', "4")]),
        # groups with filters: a row per group and bucket, not the group's total nor the
        # charge's buckets (they sum the same units again)
        ({**_line("5", 10),
          "filters": [{**_line("5", 10), "values": {"m": ["a"]}, "invoice_display_name": "A"}],
          "grouped_usage": [{**_line("5", 10), "grouped_by": {"t": "x"},
                             "filters": [{**_line("5", 10), "values": {"m": ["a"]},
                                          "invoice_display_name": "A"}]}]},
         [('{"m":["a"]}', '{"t":"x"}', "5")]),
        # grouped, no usage yet: no group, so the charge's (zero) line
        ({**_line("0", 0), "filters": [], "grouped_usage": []}, [(None, None, "0")]),
    ],
)
def test_usage_rows_are_the_leaves(charge: dict[str, Any],
                                   leaves: list[tuple[str | None, str | None, str]]) -> None:
    got = list(usage_rows({"as_of": "t"}, {"charges_usage": [{**_CHARGE, **charge}]}))
    assert [(r["filter_values"], r["grouped_by"], r["units"]) for r in got] == leaves
    assert sum(r["amount_cents"] for r in got) == charge["amount_cents"]
    assert {(r["as_of"], r["charge_lago_id"], r["billable_metric_code"]) for r in got} \
        == {("t", "7", "tokens")}
