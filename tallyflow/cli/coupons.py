"""``tallyflow coupons``: Lago's coupons and the coupons applied to customers.

Coupons are catalog objects (``{"coupon": {...}}`` in a file for ``tallyflow apply``, or
``POST /api/v1/coupons``); these commands list them and apply them:

- ``list [--json]``: every coupon and how many customers it is applied to;
- ``apply CUSTOMER COUPON [--amount-cents N] [--percentage-rate R] [--frequency F]
  [--frequency-duration N] [--json]``: Lago's ``POST /applied_coupons`` (each call applies it
  anew; a coupon that is not reusable only once per customer);
- ``applied [--customer ID] [--json]``: the applied coupons, what is left of each;
- ``terminate COUPON``: applied to no more customers (those it is applied to keep it);
- ``unapply LAGO_ID``: one applied coupon ends (its earlier credits stay).

What they credit on invoices: docs/invoices.md, "Coupons".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer

from tallyflow.infra.resources import billing_engine

app = typer.Typer(help="Coupons: list, apply to a customer, terminate.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="coupons")


@app.command("list")
def list_coupons(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every coupon: kind, amount or rate, frequency, limitation, status."""
    from tallyflow.tasks.catalog import coupon_rows, number_text

    with billing_engine().connect() as conn:
        rows = coupon_rows(conn)
    out = [{"code": r.code, "coupon_type": r.coupon_type,
            "amount_cents": None if r.amount_cents is None else int(r.amount_cents),
            "amount_currency": r.amount_currency,
            "percentage_rate": number_text(r.percentage_rate), "frequency": r.frequency,
            "frequency_duration": r.frequency_duration, "plan_codes": list(r.plan_codes),
            "billable_metric_codes": list(r.billable_metric_codes), "status": r.status,
            "applied": int(r.applied)} for r in rows]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for c in out:
        value = (f"{c['percentage_rate']} %" if c["coupon_type"] == "percentage"
                 else f"{c['amount_cents']} {c['amount_currency']} cents")
        limit = ", ".join(c["plan_codes"] or c["billable_metric_codes"]) or "every fee"
        typer.echo(f"{c['code']}: {value} {c['frequency']}, on {limit}; {c['status']},"
                   f" applied to {c['applied']} customer(s)")


@app.command("apply")
def apply(
    customer: str = typer.Argument(..., help="External customer id."),
    coupon: str = typer.Argument(..., help="Coupon code."),
    amount_cents: int | None = typer.Option(None, "--amount-cents",
                                            help="Another amount than the coupon's."),
    percentage_rate: str | None = typer.Option(None, "--percentage-rate",
                                               help="Another rate than the coupon's."),
    frequency: str | None = typer.Option(None, "--frequency", help="once|recurring|forever."),
    frequency_duration: int | None = typer.Option(None, "--frequency-duration",
                                                  help="Invoices, for recurring."),
    as_json: bool = typer.Option(False, "--json", help="Print the applied coupon as JSON."),
) -> None:
    """Apply a coupon to a customer (Lago's checks: active, reusable, no overlapping limit)."""
    from tallyflow.errors import UserError
    from tallyflow.models.catalog import APPLIED_COUPON, CouponApplication, parse_body
    from tallyflow.tasks.catalog import applied_coupon_object, applied_coupon_row, apply_coupon

    body: dict[str, Any] = {"external_customer_id": customer, "coupon_code": coupon,
                            "amount_cents": amount_cents, "percentage_rate": percentage_rate,
                            "frequency": frequency, "frequency_duration": frequency_duration}
    model, issues = parse_body(APPLIED_COUPON, {k: v for k, v in body.items() if v is not None})
    if not isinstance(model, CouponApplication):
        raise UserError("; ".join(f"{'.'.join(map(str, i.loc))}: {i.message}" for i in issues))
    with billing_engine().begin() as conn:
        applied = applied_coupon_object(
            applied_coupon_row(conn, row_id=apply_coupon(conn, model, datetime.now(UTC))))
    if as_json:
        typer.echo(json.dumps(applied, indent=2))
        return
    typer.echo(f"{coupon} applied to {customer}: {applied['lago_id']}")


@app.command("applied")
def applied(
    customer: str | None = typer.Option(None, "--customer", help="External customer id."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """The applied coupons (oldest first): status, what is left."""
    from tallyflow.tasks.catalog import applied_coupon_object, applied_coupons_page

    where = {"external_customer_id": customer} if customer else {}
    with billing_engine().connect() as conn:
        rows, _ = applied_coupons_page(conn, where, 1, 10_000)
    out = [applied_coupon_object(r) for r in rows]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for a in out:
        left = (f", {a['amount_cents_remaining']} cents left"
                if a["amount_cents_remaining"] is not None else "")
        times = (f", {a['frequency_duration_remaining']} invoice(s) left"
                 if a["frequency"] == "recurring" else "")
        typer.echo(f"{a['lago_id']} {a['external_customer_id']} {a['coupon_code']}:"
                   f" {a['status']} ({a['frequency']}{left}{times})")


@app.command("terminate")
def terminate(coupon: str = typer.Argument(..., help="Coupon code.")) -> None:
    """The coupon is applied to no more customers; those it is applied to keep it (Lago)."""
    from tallyflow.errors import UserError
    from tallyflow.tasks.catalog import terminate_coupon

    with billing_engine().begin() as conn:
        if not terminate_coupon(conn, coupon, datetime.now(UTC)):
            raise UserError(f"unknown coupon {coupon!r}")
    typer.echo(f"{coupon} terminated")


@app.command("unapply")
def unapply(lago_id: str = typer.Argument(..., help="The applied coupon's lago_id.")) -> None:
    """End one applied coupon: later invoices get nothing of it; its credits stay."""
    from tallyflow.errors import UserError
    from tallyflow.tasks.catalog import terminate_applied_coupon

    with billing_engine().begin() as conn:
        if not terminate_applied_coupon(conn, lago_id, datetime.now(UTC)):
            raise UserError(f"no applied coupon {lago_id!r}")
    typer.echo(f"{lago_id} terminated")
