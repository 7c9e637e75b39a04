"""The README's first command: ``tallyflow demo`` runs again and again, also across an hour
boundary, and never counts an event twice (issue 31)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli import demo_data
from tallyflow.cli.main import app

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()
DAY = date(2026, 3, 18)
BEFORE, AFTER = "2026-03-18T10:59:30Z", "2026-03-18T11:00:30Z"


def _demo(now: str) -> str:
    result = runner.invoke(app, ["demo", "--now", now])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps lines at the terminal's width


def _ingest_line(output: str) -> tuple[int, int, int, int]:
    found = re.search(r"3\. Ingest: (\d+) new object\(s\), (\d+) events accepted, (\d+) "
                      r"duplicates, (\d+) rejected", output)
    assert found, output
    return tuple(int(n) for n in found.groups())  # type: ignore[return-value]


def _money_state(engine: Engine) -> dict[str, object]:
    """What each customer is charged: the events, every finalized invoice's fees, and per
    customer what its wallets paid plus what its invoices leave due. (How a charge splits
    between a wallet overdraft and an invoice depends on when the hourly deductions ran, as
    documented for prepaid wallets; the sum does not.)"""
    with engine.connect() as conn:
        return {
            "events": conn.execute(text("select count(*) from events")).scalar_one(),
            "fees": conn.execute(text(
                "select c.external_id, i.issuing_date, i.fees_amount_cents::text "
                "from invoices i join customers c on c.id = i.customer_id "
                "where i.status = 'finalized' order by 1, 2, 3")).all(),
            "charged": conn.execute(text(
                "select c.external_id, (select coalesce(sum(b.consumed_amount_cents), 0) "
                "from wallet_balances b where b.customer_id = c.id) + (select "
                "coalesce(sum(i.total_amount_cents), 0) from invoices i where i.customer_id = "
                "c.id and i.status = 'finalized') from customers c order by 1")).all(),
        }


def _reset(engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tallyflow.models.tables import metadata

    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))
    monkeypatch.setenv("TALLYFLOW_HOME", str(home))


def test_a_second_run_and_a_run_after_the_hour_count_nothing_twice(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYFLOW_HOME", str(tmp_path / "home"))
    first = _ingest_line(_demo(BEFORE))
    assert first[0] > 0 and first[1] > 0 and first[3] > 0  # rejects: the bad rows kept

    assert _ingest_line(_demo(BEFORE)) == (0, 0, 0, 0)  # the same hour: nothing new

    # 11:00 ended hour 10: one new object, every event in it accepted, nothing else touched
    objects, accepted, duplicates, rejected = _ingest_line(_demo(AFTER))
    hour_10 = demo_data._hour_of_traffic(DAY, 10)
    assert (objects, accepted, duplicates, rejected) == (1, len(hour_10), 0, 0)
    with engine.connect() as conn:
        reasons = conn.execute(text("select distinct reason from rejected_rows")).scalars()
        assert "conflicting_duplicate" not in set(reasons)
    three_runs = _money_state(engine)

    # The same as one run at 11:00 on a fresh database and bucket: no event, deduction or
    # invoice counted twice by the runs before.
    _reset(engine, tmp_path / "fresh", monkeypatch)
    _demo(AFTER)
    assert _money_state(engine) == three_runs


def test_objects_are_never_rewritten(tmp_path: Path) -> None:
    """A day is one object once it has ended, or stays hour by hour if it began so; the
    hours never change once written (their content is a function of the hour alone)."""
    from datetime import UTC, datetime

    bucket = tmp_path / "bucket"
    early = demo_data.write_traffic(bucket, datetime(2026, 3, 18, 5, 20, tzinfo=UTC), days=2)
    names = [p.relative_to(bucket).as_posix() for p in early]
    assert names == ["2026-03-17/day.jsonl"] + [f"2026-03-18/hour-{h:02d}.jsonl"
                                                  for h in range(5)]
    contents = {p: p.read_bytes() for p in early}
    later = demo_data.write_traffic(bucket, datetime(2026, 3, 19, 1, 0, tzinfo=UTC), days=2)
    assert [p.relative_to(bucket).as_posix() for p in later] == (
        [f"2026-03-18/hour-{h:02d}.jsonl" for h in range(24)] + ["2026-03-19/hour-00.jsonl"])
    assert all(p.read_bytes() == content for p, content in contents.items())
    day = b"".join(demo_data._write(tmp_path / "x", demo_data._hour_of_traffic(
        date(2026, 3, 18), h)).read_bytes() for h in range(1))
    assert day.splitlines()[0] == contents[bucket / "2026-03-18/hour-00.jsonl"].splitlines()[0]
    lines = [json.loads(line) for p in later for line in p.read_text().splitlines()
             if line.startswith('{"transaction_id": "2026')]
    keys = [(e["external_subscription_id"], e["transaction_id"]) for e in lines]
    assert len(set(keys)) < len(keys)  # the retried requests (duplicates) are there


def test_the_closing_lines_point_at_the_ui_of_the_server_in_use(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("TALLYFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    output = _demo(BEFORE)
    ui = str(PREFECT_API_URL.value()).rstrip("/").removesuffix("/api")
    assert f"See these runs in the Prefect UI: {ui}/runs" in output
    assert "4200" not in ui or ":4200" in str(PREFECT_API_URL.value())
