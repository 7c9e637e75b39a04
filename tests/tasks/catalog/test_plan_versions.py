"""Plan and charge versions against real Postgres: an unchanged apply writes nothing, an edit
opens a new version with stable ids for unchanged charges, finalized invoices keep the version
they priced with (and a rerun of their hours prices with it again), export --at shows the past."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.catalog import apply_catalog, export_catalog, plan_history
from tallyflow.tasks.usage.snapshot_reads import latest_usage
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    _finalized,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)


def versions(engine: Engine) -> list[tuple[int, Any, Any]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select version, effective_from, effective_to from plan_versions order by version"))]


def open_charges(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("select id from charges where effective_to is null"
                                      " order by position")).scalars())


def edit_plan(folder: Path, **changes: Any) -> Path:
    """Change the copied example's plan (catalog() left it in folder/catalog)."""
    path = folder / "catalog" / "plan.json"
    envelope = json.loads(path.read_text())
    envelope["plan"].update(changes)
    path.write_text(json.dumps(envelope))
    return folder / "catalog"


def test_an_unchanged_apply_creates_no_version(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    before = (versions(engine), open_charges(engine))
    result = apply_catalog(engine, [tmp_path / "catalog"])
    assert result.ok and not result.changed
    assert (versions(engine), open_charges(engine)) == before
    assert [v[0] for v in before[0]] == [1] and before[0][0][2] is None


def test_an_edit_opens_a_version_and_unchanged_charges_keep_their_ids(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path)
    [charge] = open_charges(engine)
    folder = edit_plan(tmp_path, amount_cents=4200)
    at = versions(engine)[0][1] + timedelta(microseconds=1)
    result = apply_catalog(engine, [folder], effective_at=at)
    assert result.ok and result.updated["plan"] == 1
    [(v1, from1, to1), (v2, from2, to2)] = versions(engine)
    assert (v1, v2) == (1, 2) and to1 == from2 == at and to2 is None
    assert open_charges(engine) == [charge]  # same charge, same id, in both versions
    # a charge added at the end is a new row; the first keeps its id
    plan = json.loads((folder / "plan.json").read_text())["plan"]
    added = {**plan["charges"][0], "invoice_display_name": "Tokens again"}
    edit_plan(tmp_path, charges=[plan["charges"][0], added])
    assert apply_catalog(engine, [folder]).ok
    first, second = open_charges(engine)
    assert first == charge and second > charge
    with engine.connect() as conn:
        history = plan_history(conn, "mistral_per_token")
    assert [(v["version"], v["charge_ids"]) for v in history] == [
        (1, [charge]), (2, [charge]), (3, [charge, second])]


@pytest.mark.parametrize(("offset", "message"), [
    (timedelta(0), "not after version 2"),  # the moment version 2 started
    (timedelta(seconds=-1), "not after version 2"),
    (timedelta(days=1), "in the future"),
])
def test_an_effective_time_must_follow_the_current_version_and_not_be_ahead(
    engine: Engine, tmp_path: Path, offset: timedelta, message: str
) -> None:
    catalog(engine, tmp_path)
    second = versions(engine)[0][1] + timedelta(seconds=1)
    apply_catalog(engine, [edit_plan(tmp_path, amount_cents=1)], effective_at=second)
    before = versions(engine)
    effective_at = second + offset if offset <= timedelta(0) else datetime.now(UTC) + offset
    result = apply_catalog(engine, [edit_plan(tmp_path, amount_cents=2)],
                           effective_at=effective_at)
    assert not result.ok and message in str(result.errors[0])
    assert str(result.errors[0]).startswith(str(tmp_path / "catalog" / "plan.json"))
    assert versions(engine) == before


def test_export_at_shows_plans_as_they_were(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 100})
    [(_, created, _)] = versions(engine)
    later = created + timedelta(seconds=1)
    apply_catalog(engine, [edit_plan(tmp_path, amount_cents=200)], effective_at=later)

    def plans(at: datetime | None) -> list[int]:
        return [e["plan"]["amount_cents"] for e in export_catalog(engine, at) if "plan" in e]

    assert plans(created - timedelta(days=1)) == []  # the plan did not exist yet
    assert plans(created) == [100]
    assert plans(later - timedelta(microseconds=1)) == [100]
    assert plans(later) == [200]
    assert plans(None) == [200]
    # the other kinds are not versioned: shown as they are now
    kinds = {next(iter(e)) for e in export_catalog(engine, created - timedelta(days=1))}
    assert {"customer", "subscription", "billable_metric"} <= kinds


def test_a_finalized_invoice_keeps_its_version_and_reruns_price_with_it(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path, plan={"amount_cents": 3100})
    [sub] = invoice["subscriptions"]
    assert sub["plan_version"]["version"] == 1 and sub["plan_code"] == "mistral_per_token"
    march = latest_usage(engine, "sub_acme_001", datetime(2025, 3, 15, tzinfo=UTC))
    assert march is not None
    # double every price and the plan fee: version 2, from now
    folder = tmp_path / "catalog"
    plan = json.loads((folder / "plan.json").read_text())["plan"]
    charge = plan["charges"][0]
    for item in charge["filters"]:
        item["properties"]["amount"] = str(2 * Decimal(item["properties"]["amount"]))
    edit_plan(tmp_path, amount_cents=6200, charges=[charge])
    assert apply_catalog(engine, [folder]).ok
    assert [v[0] for v in versions(engine)] == [1, 2]
    # a rerun of an hour of the finalized period prices with version 1 again
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    rerun = latest_usage(engine, "sub_acme_001", datetime(2025, 3, 15, tzinfo=UTC))
    assert rerun is not None and rerun["amount_cents"] == march["amount_cents"] == 800
    [again] = invoices(engine)
    assert again == invoice
    # April closes with version 2 and says so
    usage_events(engine, tmp_path, datetime(2025, 4, 10, 12, tzinfo=UTC), prefix="april")
    may = CLOSE + timedelta(days=30)
    ingested_until(engine, may)
    hour(engine, may)
    by_number = {i["number"]: i for i in invoices(engine)}
    assert len(by_number) == 2
    first = by_number.pop(invoice["number"])
    [second] = by_number.values()
    assert first == invoice
    assert second["subscriptions"][0]["plan_version"]["version"] == 2
    assert [(f["item"]["type"], f["amount_cents"]) for f in second["fees"]] == [
        ("subscription", 6200), ("charge", 400), ("charge", 1200)]
    assert MARCH_END < datetime.fromisoformat(second["fees"][0]["from_date"])
