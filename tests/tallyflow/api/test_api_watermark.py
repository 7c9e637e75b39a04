"""`tallyflow api` alone moves the ingest watermark (issue 28 item 6), and a reserved object
holds it back until it is ingested, whether or not anything registered it
(tasks/ingest/api_writes.py, docs/architecture.md §23)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.api.pipeline import Loader, ObjectWriter, api_source
from tallyflow.tasks.ingest import api_writes
from tallyflow.tasks.invoicing import ingest_watermark
from tests.tallyflow.api.conftest import settings_for, wait_for
from tests.tallyflow.api.test_events import EVENTS, event
from tests.tasks.rating_fixtures import apply_mistral


def _watermark(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        return ingest_watermark(conn)


def _db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("select clock_timestamp()")).scalar_one()  # type: ignore[no-any-return]


def test_the_api_alone_moves_the_watermark_past_what_it_loaded(
    make_client: Callable[..., TestClient], engine: Engine, tmp_path: Path
) -> None:
    """Before issue 28 item 6 the watermark stayed None: no ingest run, nothing finalized."""
    apply_mistral(engine, tmp_path)
    client = make_client(mark=True)
    before = _db_now(engine)
    assert client.post("/api/v1/events", json={"event": event("w1")}).status_code == 200
    assert wait_for(engine, EVENTS, 1) == 1
    client.app.state.pipeline.loader.keep()  # type: ignore[attr-defined]
    watermark = _watermark(engine)
    assert watermark is not None and watermark > before
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from ingest_runs")).scalar_one() == 0
        assert conn.execute(text("select count(*) from api_writes")).scalar_one() == 0


@pytest.mark.parametrize("written", [True, False])
def test_a_reserved_object_holds_the_watermark_until_the_sweep_settles_it(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    """A crash after the reservation: the object written but never registered (it is loaded
    by the next sweep), or never written at all (forgotten once stale)."""
    apply_mistral(engine, tmp_path)
    source = api_source(settings_for(tmp_path).source_url)
    loader = Loader(engine, source)
    loader.keep()  # a mark: the API has listed until now
    reserved: list[str] = []

    def reserve(url: str) -> None:
        api_writes.reserve(engine, source.key, url)
        reserved.append(url)

    writer = ObjectWriter(source, reserve=reserve)
    if written:
        writer.write(json.dumps(event("r1")).encode() + b"\n", datetime.now(UTC))
    else:
        reserve(writer.root + "/never.jsonl")
    [url] = reserved
    with engine.connect() as conn:
        begun = conn.execute(
            text("select begun_at from api_writes where path = :p"), {"p": url}
        ).scalar_one()
    time.sleep(0.01)
    api_writes.mark(engine)  # a later mark does not pass the reservation
    assert _watermark(engine) == begun
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from ingest_objects")).scalar_one() == 0

    if not written:
        loader.keep()  # not stale yet: a live writer may be about to write it
        assert _watermark(engine) == begun
        monkeypatch.setenv("TALLYFLOW_STALE_SECONDS", "0")
    loader.keep()
    watermark = _watermark(engine)
    assert watermark is not None and watermark > begun + timedelta(microseconds=1)
    with engine.connect() as conn:
        assert conn.execute(text(EVENTS)).scalar_one() == (1 if written else 0)
        assert conn.execute(text("select count(*) from api_writes")).scalar_one() == 0


def test_a_failed_write_gives_its_reservation_back(engine: Engine, tmp_path: Path) -> None:
    source = api_source(settings_for(tmp_path).source_url)
    writer = ObjectWriter(
        source,
        reserve=lambda url: api_writes.reserve(engine, source.key, url),
        forget=lambda url: api_writes.forget(engine, [url]),
    )
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "api").write_text("not a folder")  # the write fails
    with pytest.raises(OSError):
        writer.write(b"{}\n", datetime.now(UTC))
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from api_writes")).scalar_one() == 0
