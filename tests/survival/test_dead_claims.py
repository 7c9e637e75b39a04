"""A one-off ingest killed in the middle of its object must not freeze invoice finalization.

Issue 32: the killed run's object stayed ``pending``, nothing reclaimed it, the ingest
watermark stopped behind it and no invoice was finalized again, for any customer, until the
object was re-ingested by hand. Here the real ``ingest-events`` flow runs in a child process
killed with SIGKILL after its first chunk was copied; then the next billing cycle (the real
flow) must reclaim the object, count its events and finalize the period's invoice on time.

The fixture's period is March 2025 and rows are written now, so the run rows' times are set
back to the story's clock: the one-off died an hour after the period ended, while the
scheduled ingest went on listing (``ingested_until``'s way of moving the watermark).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.flows.billing import billing_cycle
from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest import SourceSpec, watermark_holder
from tallyflow.tasks.invoicing import ingest_watermark, list_invoices
from tests.factories import jsonl
from tests.tasks.invoicing.test_invoicing import CLOSE, MARCH_END, catalog
from tests.tasks.rating_fixtures import token_event

pytestmark = pytest.mark.usefixtures("prefect_harness")

KILLED_AT = MARCH_END + timedelta(hours=1)  # the one-off died then ("12:19")
LISTED_AT = MARCH_END + timedelta(hours=5)  # the scheduled ingest went on listing until then
USED = MARCH_END - timedelta(days=20)

_CHILD = """
import sys
from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest.sources import SourceSpec
ingest_events(SourceSpec(url=sys.argv[1]), chunk_rows=1)
"""


@pytest.fixture()
def quick_staleness(monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed run is judged dead after 1.5 s of silence (the default is 30 s)."""
    monkeypatch.setenv("TALLYFLOW_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("TALLYFLOW_STALE_SECONDS", "1.5")


def _object(engine: Engine, name: str) -> tuple[str, int | None, str | None]:
    with engine.connect() as conn:
        row = conn.execute(text(
            "select o.status, o.claimed_by, r.status as run_status from ingest_objects o"
            " left join ingest_runs r on r.id = o.claimed_by where o.path like :p"),
            {"p": f"%/{name}"}).one()
    return row.status, row.claimed_by, row.run_status


def test_a_killed_one_off_ingest_is_reclaimed_and_invoices_finalize_on_time(
    engine: Engine, tmp_path: Path, quick_staleness: None
) -> None:
    from prefect.settings import PREFECT_API_URL

    catalog(engine, tmp_path)
    scheduled = tmp_path / "scheduled"
    scheduled.mkdir()
    (scheduled / "usage.jsonl").write_text(jsonl([
        token_event("s1", USED, 2_000_000), token_event("s2", USED, 2_000_000, kind="output")]))
    assert ingest_events(SourceSpec(url=scheduled.as_uri()))["accepted"] == 2
    # the one-off: 4 M more input tokens (4 dollars), killed after its first row was copied
    oneoff = tmp_path / "oneoff.jsonl"
    oneoff.write_text(jsonl([token_event(f"late{i}", USED, 1_000_000) for i in range(4)]))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, oneoff.as_uri()],
        env={**os.environ, "TALLYFLOW_FAILPOINTS": "ingest.after_copy=1",
             "PREFECT_API_URL": str(PREFECT_API_URL.value())},
        capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    status, claimer, run_status = _object(engine, "oneoff.jsonl")
    assert (status, run_status) == ("pending", "running") and claimer is not None

    with engine.begin() as conn:  # the story's clock (see the module's docstring)
        conn.execute(text("update ingest_runs set started_at = :at, finished_at = :at"
                          " where source like '%scheduled'"), {"at": LISTED_AT})
        conn.execute(text("update ingest_runs set started_at = :at where id = :id"),
                     {"at": KILLED_AT - timedelta(minutes=1), "id": claimer})
        conn.execute(text("update ingest_objects set discovered_at = :at, claimed_at = :at"
                          " where path like '%/oneoff.jsonl'"), {"at": KILLED_AT})
    time.sleep(2.0)  # the child's heartbeat has stopped: its run is dead from now on

    # what holds billing back, and why: the dead run's object, since it was listed
    holder = watermark_holder(engine)
    assert holder is not None and holder.object.endswith("/oneoff.jsonl")
    assert holder.dead and holder.holds and holder.since == KILLED_AT
    assert (holder.ingest_run, holder.run_status) == (claimer, "crashed")
    with engine.connect() as conn:
        assert ingest_watermark(conn) == KILLED_AT  # before the cycle: 2 h short of the end
    shown = CliRunner().invoke(app, ["runs", "--objects"])
    assert shown.exit_code == 0, shown.output
    text_shown = " ".join(shown.output.split())
    assert "ingest watermark held at 2025-04-01 04:59:59 UTC" in text_shown
    assert f"claimed by ingest run {claimer}" in text_shown and "crashed" in text_shown
    assert "a dead run's claim: the next billing cycle reclaims it" in text_shown

    summary = billing_cycle(hour=CLOSE)

    # reclaimed by the cycle: loaded once, under a reclaim run that listed nothing
    assert _object(engine, "oneoff.jsonl")[0] == "ingested"
    assert summary["reclaimed"]["reclaimed"] == 1 and summary["reclaimed"]["accepted"] == 4
    assert summary["reclaimed"]["held_by"]["reclaimed"] == "ingested"
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from events")).scalar_one() == 6
        assert ingest_watermark(conn) == LISTED_AT  # the reclaim's own start does not count
    # and the invoice is finalized in this very cycle, with the one-off's usage
    [finalized] = summary["invoices"]["finalized_invoices"]
    [invoice] = [i for i in list_invoices(engine, invoice_type="subscription")
                 if i["status"] == "finalized"]
    assert invoice["number"] == finalized["number"] and invoice["issuing_date"] == "2025-04-01"
    charges = sorted(f["amount_cents"] for f in invoice["fees"] if f["item"]["type"] == "charge")
    assert charges == [600, 600]  # 6 M input tokens at $1/M, 2 M output at $3/M
    assert watermark_holder(engine) is None


def test_a_live_runs_claim_is_not_taken(engine: Engine, tmp_path: Path) -> None:
    """A pending object whose claimer is still running is not reclaimed (nor shown dead)."""
    from tallyflow.tasks.ingest import build_source, register_objects, start_run
    from tallyflow.tasks.ingest.claims import reclaim_dead_claims

    (tmp_path / "a.jsonl").write_text(jsonl([token_event("a1", USED, 1)]))
    source = build_source(SourceSpec(url=tmp_path.as_uri()))
    with engine.begin() as conn:  # a live run: it beats (its heartbeat is fresh)
        conn.execute(text("insert into run_history (flow_run_id, kind) values ('live', 'ingest')"))
    run = start_run(engine, source.key, "live")
    register_objects(engine, source, source.list(), run)
    assert reclaim_dead_claims(engine) == {"reclaimed": 0, "objects": []}
    holder = watermark_holder(engine)
    assert holder is not None and not holder.dead and holder.run_status == "running"
    # the run ends without loading it (cancelled): now it is a dead claim, and reclaimed
    with engine.begin() as conn:
        conn.execute(text("update ingest_runs set status = 'cancelled', finished_at = now()"
                          " where id = :id"), {"id": run})
    assert watermark_holder(engine).dead  # type: ignore[union-attr]
    done = reclaim_dead_claims(engine)
    assert done["reclaimed"] == 1 and done["objects"][0]["status"] == "ingested"
    assert reclaim_dead_claims(engine)["reclaimed"] == 0
