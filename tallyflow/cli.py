"""The ``tallyflow`` command line: thin wrappers over flows and tasks, for people and scripts."""

from __future__ import annotations

import os

# Before anything imports Prefect: no telemetry from a billing CLI (and on a closed network it
# only produces a "database is locked" traceback), and Prefect's per-task INFO lines stay out of
# the way of the command's own output unless the user asks for them.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import typer  # noqa: E402

from tallyflow.commands import (  # noqa: E402
    catalog,
    demo,
    ingest,
    ops,
    usage,
    wallets,
)
from tallyflow.commands import db as db_commands  # noqa: E402

app = typer.Typer(
    help="Tallyflow: usage-based billing for AI token pricing on Prefect and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(db_commands.app, name="db")
# Each area owns its commands in its own module and adds them here.
for _area in (catalog, ingest, usage, wallets, ops, demo):
    _area.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
