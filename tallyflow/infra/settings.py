"""Where Tallyflow keeps things and which database it talks to.

Environment variables only: flows run in Prefect workers, CLIs and tests, and the environment is
the one channel all of them share.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATABASE_URL_ENV = "TALLYFLOW_DATABASE_URL"
HOME_ENV = "TALLYFLOW_HOME"
# Deployed runs (served or on a worker) use the embedded server only when this says so: a worker
# that silently started its own empty database would bill into it and nobody would notice.
EMBEDDED_ENV = "TALLYFLOW_EMBEDDED"
# Where Prefect automations send notifications (failed/crashed runs, wallet alerts).
NOTIFY_WEBHOOK_ENV = "TALLYFLOW_NOTIFY_WEBHOOK_URL"


def tallyflow_home() -> Path:
    """The folder for the embedded database and local state.

    Kept short by default because PostgreSQL's unix socket path must stay under ~100 bytes.
    """
    configured = os.environ.get(HOME_ENV)
    path = Path(configured) if configured else Path(platformdirs.user_data_dir("tallyflow"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured_database_url() -> str | None:
    return os.environ.get(DATABASE_URL_ENV) or None


def embedded_opted_in() -> bool:
    return os.environ.get(EMBEDDED_ENV, "").strip().lower() in ("1", "true", "yes")


def notify_webhook_url() -> str | None:
    return os.environ.get(NOTIFY_WEBHOOK_ENV) or None


# Where `tallyflow api` writes event objects (under api/); the ingest-events/api deployment
# reads the same place.
API_BUCKET_ENV = "TALLYFLOW_API_BUCKET"


def api_bucket() -> str:
    """The API's bucket as a URL: ``TALLYFLOW_API_BUCKET`` (a URL or a local path), else the
    folder ``api-bucket`` under ``TALLYFLOW_HOME``."""
    configured = os.environ.get(API_BUCKET_ENV)
    if not configured:
        return (tallyflow_home() / "api-bucket").as_uri()
    if "://" not in configured:
        return Path(configured).expanduser().resolve().as_uri()
    return configured.rstrip("/")
