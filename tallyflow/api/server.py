"""Run the API under uvicorn (``tallyflow api``, or beside the deployments in
``tallyflow serve --api``)."""

from __future__ import annotations

from tallyflow.api.settings import ApiSettings, api_settings
from tallyflow.errors import UserError
from tallyflow.infra.settings import get_settings

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


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, load: bool = True) -> None:
    import uvicorn

    from tallyflow.api.app import create_app
    from tallyflow.infra.resources import billing_engine

    settings = api_settings()
    check_sources(settings)
    check_port(host, port)
    app = create_app(billing_engine(), settings, load=load)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
