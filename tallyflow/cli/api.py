"""``tallyflow api`` (the Lago-compatible HTTP API) and ``tallyflow api-keys``.

- ``api [--host 127.0.0.1] [--port 3000] [--workers 1]``: serve Lago's v1 API (docs at /docs);
- ``api-keys create NAME``: a new key, printed once (only its hash is kept);
- ``api-keys list [--json]``; ``api-keys revoke NAME|PREFIX``.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.infra.resources import billing_engine


def register(root: typer.Typer) -> None:
    root.command("api")(api)
    keys = typer.Typer(help="API keys of `tallyflow api` (Authorization: Bearer <key>).",
                       no_args_is_help=True)
    keys.command("create")(create)
    keys.command("list")(list_)
    keys.command("revoke")(revoke)
    root.add_typer(keys, name="api-keys")


def api(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(3000, "--port", help="Port to listen on."),
    workers: int = typer.Option(
        1, "--workers", help="Server processes on the one port (about one per core); each "
        "has its own intake bound and caches, and 1/N of the per-key rate."),
) -> None:
    """Serve Lago's v1 API (events, usage, wallets, invoices, catalog) until stopped."""
    from tallyflow.api.server import run

    typer.echo(f"Tallyflow API on http://{host}:{port}/api/v1/ (docs: http://{host}:{port}/docs)",
               err=True)
    run(host, port, workers=workers)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from exc


def create(name: str = typer.Argument(..., help="Who or what uses the key.")) -> None:
    """Create a key and print it (shown once: only its hash is stored)."""
    from tallyflow.api.keys import ApiKeyError, create_key

    try:
        key, _ = create_key(billing_engine(), name)
    except ApiKeyError as exc:
        _fail(exc)
    typer.echo(key)


def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List keys (name, prefix, created, revoked); never the keys themselves."""
    from tallyflow.api.keys import list_keys

    keys = list_keys(billing_engine())
    if as_json:
        typer.echo(json.dumps([k.as_dict() for k in keys], indent=2))
        return
    table = Table(title="API keys")
    for column in ("name", "prefix", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.name, k.prefix + "...", k.created_at.isoformat(timespec="seconds"),
                      k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
    Console().print(table)


def revoke(key: str = typer.Argument(..., help="The key's name or its prefix.")) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from tallyflow.api.keys import ApiKeyError, revoke_key

    try:
        revoked = revoke_key(billing_engine(), key)
    except ApiKeyError as exc:
        _fail(exc)
    typer.echo(f"revoked {revoked.name} ({revoked.prefix}...)")
