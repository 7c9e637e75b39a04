"""Hostile numbers through files, then a real ``billing-cycle``: each refused with its reason
(``number_out_of_range``) or counted as unbillable, nothing valid beside it lost, and every
customer billed -- including one whose usage is a thousand events at the number rule's bound
(models/number_rule.py), whose cents no longer fit in 64 bits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.billing import billing_cycle
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import (
    SourceSpec,
    build_source,
    ingest_object,
    loads_exact,
    register_objects,
)
from tests.tasks.rating_fixtures import SUB, apply_mistral, token_event

pytestmark = pytest.mark.usefixtures("prefect_harness")
HOUR = datetime(2025, 3, 15, 10, tzinfo=UTC)
OTHER = "sub_globex_001"
BIGGEST = 10**25 - 1
AT_BOUND = 1000  # events of BIGGEST tokens each


def _second_customer(engine: Engine, catalog: Path) -> None:
    (catalog / "globex_customer.json").write_text(json.dumps({"customer": {
        "external_id": "globex", "name": "Globex", "currency": "USD", "timezone": "UTC"}}))
    (catalog / "globex_subscription.json").write_text(json.dumps({"subscription": {
        "external_customer_id": "globex", "plan_code": "mistral_per_token",
        "external_id": OTHER, "billing_time": "calendar",
        "subscription_at": "2025-01-01T00:00:00Z"}}))
    result = apply_catalog(engine, [catalog])
    assert result.ok, result.errors


def _line(txn: str, sub: str, tokens: bytes) -> bytes:
    return (b'{"transaction_id": "' + txn.encode() + b'", "external_subscription_id": "'
            + sub.encode() + b'", "code": "mistral_tokens", "timestamp": '
            b'"2025-03-10T00:00:00Z", "properties": {"tokens": ' + tokens
            + b', "model": "mistral-small", "type": "input"}}\n')


HOSTILE_JSON = [b"1e400", b"-1e400", b"1e308", b"-1e308", b"123456789012345678901234567890",
                b"10000000000000000000000000", b"0." + b"0" * 39 + b"1", b"1e-400"]
# strings are data: accepted, and not read as a number by the sum (unbillable)
UNBILLABLE_STRINGS = [b'"' + b"1" * 40 + b'"', b'"1e5"', b'" 100 "', b'"0x10"',
                      '"\u0661\u0662"'.encode(), b'"NaN"', b"true", b"null"]


def _objects(bucket: Path) -> None:
    lines = [_line(f"bound-{n}", SUB, str(BIGGEST).encode()) for n in range(AT_BOUND)]
    lines += [_line(f"hostile-{n}", SUB, value) for n, value in enumerate(HOSTILE_JSON)]
    lines += [_line(f"string-{n}", OTHER, value) for n, value in enumerate(UNBILLABLE_STRINGS)]
    lines += [_line("globex-ok", OTHER, b"2000000"), _line("globex-decimal", OTHER, b"0.5")]
    (bucket / "a.jsonl").write_bytes(b"".join(lines))
    csv = ["transaction_id,external_subscription_id,code,timestamp,properties.tokens,"
           "properties.model,properties.type"]
    csv += [f"csv-{n},{OTHER},mistral_tokens,2025-03-10T00:00:00Z,{value},mistral-small,input"
            for n, value in enumerate(["1000000", "1" * 40, "1e400", "-0"])]
    (bucket / "b.csv").write_text("\n".join(csv) + "\n")


def _ingest(engine: Engine, bucket: Path) -> list[Any]:
    source = build_source(SourceSpec(url=bucket.as_uri()))
    return [ingest_object(engine, source, i) for i in register_objects(engine, source,
                                                                        source.list())]


def test_hostile_numbers_then_a_billing_cycle_bills_everyone(
    engine: Engine, tmp_path: Path
) -> None:
    catalog = apply_mistral(engine, tmp_path)
    _second_customer(engine, catalog)
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    _objects(bucket)
    results = _ingest(engine, bucket)
    assert [r.status for r in results] == ["ingested", "ingested"]
    with engine.connect() as conn:
        rejected = conn.execute(text(
            "select o.path, r.row_number, r.field, r.reason, r.message from rejected_rows r"
            " join ingest_objects o on o.id = r.object_id order by o.path, r.row_number")).all()
    assert [(Path(r.path).name, r.row_number, r.field, r.reason) for r in rejected] == [
        ("a.jsonl", AT_BOUND + n + 1, "properties.tokens", "number_out_of_range")
        for n in range(len(HOSTILE_JSON))
    ]  # the CSV's values are strings: data, none refused
    assert all("1e25" in r.message for r in rejected)
    assert results[0].accepted == AT_BOUND + len(UNBILLABLE_STRINGS) + 2
    assert results[1].accepted == 4

    cycle = billing_cycle(hour=HOUR)
    assert cycle["usage"]["snapshots"] == 2, cycle
    with engine.connect() as conn:
        rows = {r.external_subscription_id: r for r in conn.execute(text(
            "select external_subscription_id, amount_cents, usage from usage_snapshots"))}
    # acme: 1000 x (1e25 - 1) tokens at $1 per started million
    packages = -(-AT_BOUND * BIGGEST // 10**6)
    assert rows[SUB].amount_cents == Decimal(packages * 100)
    usage = loads_exact(json.dumps(rows[SUB].usage)) if isinstance(rows[SUB].usage, dict) \
        else loads_exact(rows[SUB].usage)
    assert usage["amount_cents"] == packages * 100 and packages * 100 > 2**64
    assert usage["charges_usage"][0]["units"] == str(AT_BOUND * BIGGEST)
    # globex: 2,000,000.5 + 1,000,000 (CSV) tokens -> 4 packages; the strings are unbillable
    assert rows[OTHER].amount_cents == 400
    with engine.connect() as conn:
        unbillable = conn.execute(text(
            "select coalesce(sum(unbillable_count), 0) from usage_states s"
            " join subscriptions u on u.id = s.subscription_id where u.external_id = :s"),
            {"s": OTHER}).scalar_one()
    # the eight strings, and the CSV's "1"*40 and "1e400" (not numbers the sum reads)
    assert unbillable == len(UNBILLABLE_STRINGS) + 2


def test_one_event_at_the_bound_is_billed_and_its_snapshot_written(
    engine: Engine, tmp_path: Path
) -> None:
    """The issue's failure, at the edge of what is accepted: one event's cents beyond 64 bits
    used to fail the snapshot of its whole batch (orjson)."""
    apply_mistral(engine, tmp_path)
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "one.jsonl").write_text(
        json.dumps(token_event("one", "2025-03-10T00:00:00Z", BIGGEST)) + "\n")
    assert [r.accepted for r in _ingest(engine, bucket)] == [1]
    cycle = billing_cycle(hour=HOUR)
    assert cycle["usage"]["snapshots"] == 1
    with engine.connect() as conn:
        cents = conn.execute(text("select amount_cents from usage_snapshots")).scalar_one()
    assert cents == Decimal(-(-BIGGEST // 10**6) * 100)
