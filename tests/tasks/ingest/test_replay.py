"""A replay against billed history (tasks/ingest/replay.py): records in a period on a finalized
invoice are kept and listed for a credit note, the open period's are replaced and re-rated;
an object rewritten since it was read is not replayed (its new version is its own row)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import Source, SourceSpec, build_source, plan_replay, rerate_replay
from tallyflow.tasks.ingest.load import drain, ingest_object
from tests.factories import jsonl
from tests.tasks.corrections.test_voids import wallet_rows
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, invoices
from tests.tasks.rating_fixtures import token_event
from tests.tasks.subscriptions.test_lifecycle import cycle

REMODEL = """\
name: lago-remodel
transaction_id: transaction_id
external_subscription_id: external_subscription_id
timestamp: timestamp
code: code
properties:
  tokens: properties.tokens
  type: properties.type
  model: %s
"""


def _source(tmp_path: Path, model: str) -> Source:
    mapping = tmp_path / "remodel.yaml"
    mapping.write_text(REMODEL % model)
    return build_source(SourceSpec(url=(tmp_path / "bucket").as_uri(), mapping=str(mapping)))


def _march_closed(engine: Engine, tmp_path: Path) -> None:
    """$31 plan; events a1, a2 on 10 March (finalized on 1 April), b1, b2 on 5 April (open),
    read through a mapping file that keeps the model."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for prefix, when in (("a", "2025-03-10T12:00:00+00:00"), ("b", "2025-04-05T12:00:00+00:00")):
        (bucket / f"{prefix}.jsonl").write_text(jsonl([
            token_event(f"{prefix}1", when, 2_000_000),
            token_event(f"{prefix}2", when, 2_000_000, kind="output")]))
    assert all(r.status == "ingested"
               for r in drain(engine, _source(tmp_path, "properties.model")))
    ingested_until(engine, datetime(2025, 4, 6, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 6, tzinfo=UTC))
    [march] = invoices(engine)
    assert march["status"] == "finalized"


def _replay(engine: Engine, tmp_path: Path) -> tuple[list[int], list]:
    source = _source(tmp_path, "{const: mistral-medium}")  # the mapping file, edited
    ids = plan_replay(engine, source.key, source.kind, source.spec.ledger_spec(),
                      source.fingerprint, "auto", actor="ops",
                      current={r.url: r.version for r in source.list()})
    return ids, [ingest_object(engine, source, i) for i in ids]


def test_finalized_periods_are_kept_and_listed_the_open_one_replaced(
    engine: Engine, tmp_path: Path
) -> None:
    _march_closed(engine, tmp_path)  # March a1, a2 finalized; April b1, b2 open
    ledger = wallet_rows(engine)
    ids, results = _replay(engine, tmp_path)
    assert len(ids) == 2 and all(r.status == "ingested" for r in results)
    march, april = (r.replay for r in results)
    assert march is not None and april is not None
    assert (march["records_kept"], march["records_replaced"], march["events_voided"]) == (
        2, 0, 0)
    assert [(k["transaction_id"], k["refused"].split()[0]) for k in march["kept"]] == [
        ("a1", "invoice_finalized"), ("a2", "invoice_finalized")]
    assert (april["records_replaced"], april["events_voided"], april["events_renamed"]) == (
        2, 2, 2)
    with engine.connect() as conn:
        live = dict(conn.execute(text(
            "select transaction_id, properties->>'model' from events where voided_at is null"
            " order by 1")).all())
    suffix = f"~replay-{ids[1]}"
    assert live == {"a1": "mistral-small", "a2": "mistral-small",
                    f"b1{suffix}": "mistral-medium", f"b2{suffix}": "mistral-medium"}
    # the open period is re-rated (a snapshot, the wallet corrected), the finalized one not
    rerate = rerate_replay(engine, ids)
    assert rerate.snapshots >= 1 and {p["period_start"][:7] for p in rerate.periods} == {
        "2025-04"}
    assert rerate.deducted_cents == 1360  # April 800 -> 2160 cents at mistral-medium prices
    assert len(wallet_rows(engine)) == len(ledger) + 1
    # rerun: nothing left to replay under these settings, nothing moves again
    moved = wallet_rows(engine)
    assert _replay(engine, tmp_path) == ([], [])
    rerate_replay(engine, ids)
    assert wallet_rows(engine) == moved


def test_an_object_rewritten_since_it_was_read_is_not_replayed(
    engine: Engine, tmp_path: Path
) -> None:
    _march_closed(engine, tmp_path)
    first = sorted((tmp_path / "bucket").glob("*.jsonl"))[0]
    first.write_text(first.read_text())  # same bytes, a new modification time: a new version
    ids, _ = _replay(engine, tmp_path)
    assert len(ids) == 1  # only the untouched object


@pytest.mark.usefixtures("prefect_harness")
def test_a_replay_cut_short_before_its_re_rating_is_finished_by_the_next_reingest(
    engine: Engine, tmp_path: Path
) -> None:
    from tallyflow.flows.ingest import reingest_source

    _march_closed(engine, tmp_path)
    ledger = wallet_rows(engine)
    ids, _ = _replay(engine, tmp_path)  # objects replayed and committed; then the crash
    assert len(ids) == 2 and wallet_rows(engine) == ledger  # nothing re-rated yet
    source = _source(tmp_path, "{const: mistral-medium}")
    summary = reingest_source(source.spec)
    assert summary["replay"]["objects"] == 0  # nothing left to read again
    # b1, b2 re-priced as mistral-medium: April's usage 800 -> 2160 cents, the difference
    # deducted once
    assert summary["replay"]["rerate"]["deducted_cents"] == "1360"
    moved = wallet_rows(engine)
    assert len(moved) > len(ledger)
    reingest_source(source.spec)
    assert wallet_rows(engine) == moved  # converged
