"""``tallyflow apply`` and ``tallyflow catalog export|show``: catalog files to Postgres and back.

Thin wrappers over ``tasks.catalog``; all the rules live in ``models.catalog``. Errors go to
stderr one per line as ``file: json.path: reason`` so editors and CI can point at them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from tallyflow.errors import UserError
from tallyflow.infra.resources import billing_engine

if TYPE_CHECKING:
    from tallyflow.tasks.catalog import ApplyResult

# models.catalog and tasks.catalog are imported where used: every command of the CLI would
# otherwise pay for loading them at start-up.

catalog_app = typer.Typer(
    help="The catalog in the database: export it as Lago-shaped files, or show it.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``apply`` and the ``catalog`` group to the main command line."""
    app.command("apply")(apply)
    app.add_typer(catalog_app, name="catalog")


def apply(
    paths: list[Path] = typer.Argument(
        ..., help="Catalog files (.json, .yaml, .yml) or folders (read recursively)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    effective_at: str | None = typer.Option(
        None, "--effective-at",
        help="When the plan versions this apply creates took effect (ISO 8601; default: now;"
             " not in the future, after the version each replaces).",
    ),
) -> None:
    """Apply Lago-shaped catalog files: all or nothing, idempotent, every error reported.

    New wallets open at once: their granted credits are in the balance right after the apply.
    A changed plan gets a new version; unchanged charges keep their ids.
    """
    from tallyflow.tasks.catalog import apply_catalog
    from tallyflow.tasks.invoicing import issue_credit_invoices
    from tallyflow.tasks.wallets import open_catalog_wallets

    engine = billing_engine()
    result = apply_catalog(engine, paths, effective_at=_moment(effective_at, "--effective-at"))
    opened = open_catalog_wallets(engine) if result.ok else 0
    if opened:
        issue_credit_invoices(engine)  # the purchased credits of the new wallets
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "wallets_opened": opened}, indent=2))
    elif result.ok:
        Console().print(_summary(result))
        if opened:
            typer.echo(f"{opened} new wallet(s) opened: granted credits settled, purchased "
                       "credits pending until paid (tallyflow wallets mark-paid)")
    for error in result.errors:
        typer.echo(str(error), err=True)
    if not result.ok:
        if not as_json:
            typer.echo(f"{len(result.errors)} error(s); nothing was applied.", err=True)
        raise typer.Exit(code=1)


def _summary(result: ApplyResult) -> Table:
    from tallyflow.models.catalog import KINDS

    table = Table(title="catalog apply")
    for column in ("kind", "created", "updated", "unchanged"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in KINDS:
        table.add_row(kind, str(result.created[kind]), str(result.updated[kind]),
                      str(result.unchanged[kind]))
    return table


@catalog_app.command("export")
def export(
    output: Path | None = typer.Option(
        None, "--output", "-o",
        help="A .json/.yaml file, or a folder (one JSON file per kind). Default: stdout.",
    ),
    at: str | None = typer.Option(
        None, "--at",
        help="Show plans as they were at this moment (ISO 8601): their version in force then.",
    ),
) -> None:
    """Write the catalog as Lago envelopes that ``tallyflow apply`` accepts unchanged."""
    from tallyflow.models.catalog import dumps
    from tallyflow.tasks.catalog import export_catalog, write_catalog

    envelopes = export_catalog(billing_engine(), _moment(at, "--at"))
    if output is None:
        typer.echo(dumps(envelopes, indent=2))
        return
    for path in write_catalog(envelopes, output):
        typer.echo(f"wrote {path}")


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 moment given on the command line (UTC when it names no offset)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r} is not an ISO 8601 date or time",
                             hint="e.g. 2026-11-01T00:00:00Z", exit_code=2) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@catalog_app.command("versions")
def versions(
    code: str = typer.Argument(..., help="The plan's code."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"plan_versions\": [...]}."),
) -> None:
    """The versions of one plan: when each was in force and the charge ids it priced with."""
    from tallyflow.tasks.catalog import plan_history

    with billing_engine().connect() as conn:
        history = plan_history(conn, code)
    if not history:
        raise UserError(f"no plan {code!r}", hint="tallyflow catalog show lists the plans")
    if as_json:
        typer.echo(json.dumps({"plan_versions": history}, indent=2))
        return
    table = Table(title=f"plan {code}: versions")
    for column in ("version", "effective_from", "effective_to", "charge_ids"):
        table.add_column(column)
    for v in history:
        table.add_row(str(v["version"]), v["effective_from"], v["effective_to"] or "(current)",
                      ", ".join(str(c) for c in v["charge_ids"]))
    Console().print(table)


@catalog_app.command("show")
def show() -> None:
    """A readable listing: metrics, plans with charges, filters and prices, customers,
    subscriptions, wallets and add-ons."""
    from tallyflow.models.catalog import (
        ADD_ON,
        BILLABLE_METRIC,
        COUPON,
        CUSTOMER,
        KINDS,
        PLAN,
        SUBSCRIPTION,
        TAX,
        WALLET,
    )
    from tallyflow.tasks.catalog import export_catalog

    envelopes = export_catalog(billing_engine())
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for envelope in envelopes:
        for kind, body in envelope.items():
            by_kind[kind].append(body)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
        console = Console(width=200)
    if by_kind[TAX]:
        console.print(_table("taxes", by_kind[TAX],
                             ("code", "name", "rate", "applied_to_organization")))
    console.print(_metrics_table(by_kind[BILLABLE_METRIC]))
    for plan in by_kind[PLAN]:
        console.print(_plan_tree(plan))
    console.print(_table("customers", by_kind[CUSTOMER],
                         ("external_id", "name", "email", "currency", "timezone")))
    console.print(_table("subscriptions", by_kind[SUBSCRIPTION],
                         ("external_id", "external_customer_id", "plan_code", "billing_time",
                          "subscription_at", "ending_at")))
    console.print(_table("wallets", by_kind[WALLET],
                         ("external_customer_id", "code", "name", "currency", "rate_amount",
                          "paid_credits", "granted_credits", "priority", "expiration_at")))
    if by_kind[ADD_ON]:
        rows = [{**a, "tax_codes": ", ".join(a.get("tax_codes") or [])} for a in by_kind[ADD_ON]]
        console.print(_table("add-ons", rows,
                             ("code", "name", "amount_cents", "amount_currency", "tax_codes")))
    if by_kind[COUPON]:
        console.print(_table("coupons", by_kind[COUPON],
                             ("code", "name", "coupon_type", "amount_cents", "amount_currency",
                              "percentage_rate", "frequency", "frequency_duration",
                              "expiration_at")))


def _table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_text(row.get(column)) for column in columns))
    return table


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _metrics_table(metrics: list[dict[str, Any]]) -> Table:
    table = Table(title="billable metrics")
    for column in ("code", "name", "aggregation", "field", "recurring", "filters"):
        table.add_column(column)
    for metric in metrics:
        filters = "; ".join(f"{f['key']}: {', '.join(f['values'])}"
                            for f in metric.get("filters", []))
        table.add_row(metric["code"], metric["name"], metric["aggregation_type"],
                      _text(metric.get("field_name")), str(metric.get("recurring", False)),
                      filters)
    return table


def _plan_tree(plan: Mapping[str, Any]) -> Tree:
    tree = Tree(f"[bold]plan {plan['code']}[/bold] ({plan['name']}): {plan['interval']}, "
                f"amount_cents {plan['amount_cents']} {plan['amount_currency']}"
                + (" in advance" if plan.get("pay_in_advance") else ""))
    for charge in plan.get("charges", []):
        metric = charge.get("billable_metric_code") or charge.get("billable_metric_id")
        node = tree.add(f"charge on {metric}: {charge['charge_model']}"
                        + (" (pay in advance)" if charge.get("pay_in_advance") else "")
                        + f" | default: {_price(charge['charge_model'], charge['properties'])}")
        for item in charge.get("filters", []):
            values = ", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(item["values"].items()))
            node.add(f"{values}: {_price(charge['charge_model'], item['properties'])}")
    return tree


def _price(charge_model: str, properties: Mapping[str, Any]) -> str:
    """One line per price, in the words a pricing page would use (the model's own words:
    ``describe`` in its module, docs/architecture.md §9)."""
    from tallyflow.models.rating.charge_models import CHARGE_MODELS

    if not any(k not in ("pricing_group_keys", "grouped_by") for k in properties):
        return "0 (no price)"
    definition = CHARGE_MODELS.get(charge_model)
    return definition.describe(properties) if definition else charge_model
