"""`tallyflow api` killed with SIGKILL mid-load, or between writing an object and anything
registering it (issue 28 item 6, docs/architecture.md §23): no event lost, none counted twice,
finalization waits for the object left behind, and proceeds once the restarted API (which
loads it at start) has loaded it. No ingest run is involved: the API alone completes the loop.

The fixture's period is March 2025 and rows are written now, so the crash is moved back to the
story's clock (as tests/survival/test_dead_claims.py does): the API died an hour after the
period ended and had gone on marking its listing until five hours after it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import ingest_watermark, list_invoices
from tests.faults import wait_for_open_transactions_to_end
from tests.tallyflow.api.conftest import LiveApi, api_key, live_api, wait_for  # noqa: F401
from tests.tasks.invoicing.test_invoicing import CLOSE, MARCH_END, catalog, hour
from tests.tasks.rating_fixtures import token_event

KILLED_AT = MARCH_END + timedelta(hours=1)
LISTED_AT = MARCH_END + timedelta(hours=5)
USED = MARCH_END - timedelta(days=20)
EVENTS = "select count(*) from events"


def _post(server: LiveApi, key: str, events: list[dict[str, Any]]) -> bool:
    """True when answered 200; False when the process died under the request."""
    try:
        answer = httpx.post(
            f"{server.url}/api/v1/events/batch",
            json={"events": events},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    except httpx.HTTPError:
        return False
    assert answer.status_code == 200, answer.text
    return True


def _watermark(engine: Engine) -> Any:
    with engine.connect() as conn:
        return ingest_watermark(conn)


def _finalized(engine: Engine) -> list[dict[str, Any]]:
    return [
        i for i in list_invoices(engine, invoice_type="subscription") if i["status"] == "finalized"
    ]


@pytest.mark.parametrize(
    "failpoint",
    [
        pytest.param("ingest.after_copy=1", marks=pytest.mark.slow),  # `make test-slow`
        "api.after_write=1",
    ],
)
def test_killed_api_loses_nothing_counts_nothing_twice_and_holds_finalization(
    live_api: Callable[..., LiveApi],  # noqa: F811
    engine: Engine,
    api_key: str,  # noqa: F811
    tmp_path: Path,
    failpoint: str,
) -> None:
    catalog(engine, tmp_path)
    first = [token_event(f"a{i}", USED, 1_000_000) for i in range(4)]
    server = live_api(TALLYFLOW_FAILPOINTS=failpoint, TALLYFLOW_STALE_SECONDS="1.5")
    answered = _post(server, api_key, first)
    assert server.process.wait(60) == -signal.SIGKILL
    assert answered == failpoint.startswith("ingest.")  # after_write dies before the answer
    wait_for_open_transactions_to_end(engine)  # the dead loader's transaction is rolled back
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == 0
        [(path, begun)] = conn.execute(text("select path, begun_at from api_writes")).all()
        registered = conn.execute(text("select status from ingest_objects")).scalars().all()
        marked = conn.execute(text("select marked_at from api_mark")).scalar_one()
    assert Path(path.removeprefix("file://")).exists()  # written whole before the kill
    assert registered == (["pending"] if answered else [])  # after_write: never registered
    assert marked < begun and _watermark(engine) == marked  # the object holds the watermark

    with engine.begin() as conn:  # the story's clock (see the module's docstring)
        conn.execute(text("update api_writes set begun_at = :at"), {"at": KILLED_AT})
        conn.execute(text("update ingest_objects set discovered_at = :at"), {"at": KILLED_AT})
        conn.execute(text("update api_mark set marked_at = :at"), {"at": LISTED_AT})
    assert _watermark(engine) == KILLED_AT  # 3 h short of the period end plus 2 h settle
    hour(engine, CLOSE)
    assert _finalized(engine) == []  # finalization waits for the object left behind

    restarted = live_api()  # loads what the killed process wrote, at start
    if not answered:  # the client was not answered: it sends the batch again, as SDKs do
        assert _post(restarted, api_key, first)
    assert wait_for(engine, EVENTS, 4) == 4
    assert _post(restarted, api_key, [token_event("b1", USED, 2_000_000)])
    assert wait_for(engine, EVENTS, 5) == 5
    still_open = wait_for(
        engine,
        "select count(*) from api_writes w where not exists"
        " (select 1 from ingest_objects o where o.path = w.path"
        " and o.status = 'ingested')",
        0,
    )
    assert still_open == 0
    assert _watermark(engine) > CLOSE  # the restarted API's mark, nothing held back

    hour(engine, CLOSE)
    [invoice] = _finalized(engine)
    charges = [f for f in invoice["fees"] if f["item"]["type"] == "charge"]
    assert sorted(f["amount_cents"] for f in charges) == [600]  # 6 M input tokens, each once
    with engine.connect() as conn:
        assert conn.execute(
            text("select count(*), count(distinct transaction_id) from events")
        ).one() == (5, 5)
        duplicates = conn.execute(text("select sum(duplicates) from ingest_objects")).scalar()
        assert duplicates == (0 if answered else 4)  # the retry's copy of the kept object
        assert conn.execute(text("select count(*) from ingest_runs")).scalar_one() == 0
