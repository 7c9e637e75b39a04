"""An in-process API app over the test database, with a folder bucket and an API key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.api.app import create_app
from tallyflow.api.keys import create_key
from tallyflow.api.settings import ApiSettings


def settings_for(folder: Path, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {"bucket": (folder / "bucket").as_uri(), "commit_seconds": 0.05,
                              "commit_events": 5000, "max_body_bytes": 4 * 1024 * 1024}
    return ApiSettings(**{**values, **overrides})


@pytest.fixture()
def api_key(engine: Engine) -> str:
    return create_key(engine, "tests")[0]


@pytest.fixture()
def make_client(engine: Engine, tmp_path: Path,
                api_key: str) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(load: bool = True, **overrides: Any) -> TestClient:
        app = create_app(engine, settings_for(tmp_path, **overrides), load=load)
        client = TestClient(app, headers={"Authorization": f"Bearer {api_key}"})
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def wait_for(engine: Engine, query: str, expected: Any, timeout: float = 20.0,
             **params: Any) -> Any:
    """Poll until the query gives ``expected`` (the loader works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            value = conn.execute(text(query), params).scalar()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.02)
