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
