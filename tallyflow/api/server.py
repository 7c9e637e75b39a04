"""Run the API under uvicorn (``tallyflow api``, or beside the deployments in
``tallyflow serve --api``).

``--workers N`` runs N uvicorn worker processes on one listening socket (docs/architecture.md
§22): each is a whole app, with its own group commit, loader, intake bound, caches and 1/N of
the per-key rate. Exactly once does not depend on which process writes or loads an object
(unique object names per process; the ingest ledger's claim), so they need not coordinate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING

from tallyflow.api.settings import ApiSettings, api_settings
from tallyflow.errors import UserError
from tallyflow.infra.settings import get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000


def check_sources(settings: ApiSettings) -> None:
    """Refuse a bucket that the interval ingest also reads: its listing would register the
    API's objects under another source and load them a second time."""
    other = (get_settings().source_url or "").rstrip("/")
    if other and (settings.source_url + "/").startswith(other + "/"):
        raise UserError(
            f"the API writes under {settings.source_url}, inside TALLYFLOW_SOURCE_URL={other} "
            "that the interval ingest reads: its objects would be loaded twice",
            "point TALLYFLOW_API_BUCKET at another bucket or prefix",
        )


def check_port(host: str, port: int) -> None:
    """Say in one line that the address is taken, before anything starts."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            "choose another --port (or --host)") from None


# How the parent hands ``load`` and the worker count to its spawned workers (not a setting).
_WORKER_SPEC = "TF_API_WORKER_SPEC"
MAX_WORKERS = 16


def worker_settings(settings: ApiSettings, workers: int) -> ApiSettings:
    """One worker's share: the per-key rate is split between the workers (the kernel spreads
    connections about evenly), so a key gets about its configured rate in all."""
    if workers <= 1 or settings.rate_limit is None:
        return settings
    return dataclasses.replace(settings, rate_limit=settings.rate_limit / workers)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each)."""
    from tallyflow.api.app import create_app
    from tallyflow.infra.resources import billing_engine

    spec = json.loads(os.environ.get(_WORKER_SPEC, "{}"))
    settings = worker_settings(api_settings(), int(spec.get("workers", 1)))
    return create_app(billing_engine(), settings, load=bool(spec.get("load", True)))


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, load: bool = True,
        workers: int = 1) -> None:
    import uvicorn

    from tallyflow.api.app import create_app
    from tallyflow.infra.resources import billing_engine

    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers {workers}: between 1 and {MAX_WORKERS}",
                        "about one per core is enough")
    settings = api_settings()
    check_sources(settings)
    check_port(host, port)
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if workers == 1:
        uvicorn.run(create_app(billing_engine(), settings, load=load), **options)  # type: ignore[arg-type]
        return
    os.environ[_WORKER_SPEC] = json.dumps({"workers": workers, "load": load})
    uvicorn.run("tallyflow.api.server:worker_app", factory=True, workers=workers,
                **options)  # type: ignore[arg-type]
