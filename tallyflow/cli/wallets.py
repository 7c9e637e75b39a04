"""``tallyflow wallets``: balances, top-ups, payments, alert rules and the deduction flow by hand.

- ``show EXTERNAL_CUSTOMER_ID [--json]``: balances (credits and money), ongoing usage, the last
  transactions (JSON with Lago's wallet field names);
- ``top-up EXTERNAL_CUSTOMER_ID [--wallet CODE] --paid-credits X --granted-credits Y``;
- ``mark-paid EXTERNAL_CUSTOMER_ID [--wallet CODE] [--transaction ID]``;
- ``alert-rule --below X | --depleted [--customer C --wallet CODE]``;
- ``deduct [--at T]`` runs the ``wallet-deductions`` flow now; ``runs`` lists run history;
- ``balance EXTERNAL_CUSTOMER_ID``: the running balance and ``allowed``; ``refresh-balances
  [--every S]`` keeps it (docs/architecture.md §19).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tallyflow.cli.common import flow_session, parse_moment
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.money import money

app = typer.Typer(help="Prepaid wallets: balances, top-ups, payments, deductions.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="wallets")


def _credits(value: str, name: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise typer.BadParameter(f"{name} must be a decimal number; got {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise typer.BadParameter(f"{name} must be a non-negative number; got {value!r}")
    return number


def _fail(message: str) -> None:
    typer.echo(message.strip("'\""), err=True)
    raise typer.Exit(1)


@app.command("show")
def show(
    customer: str = typer.Argument(..., help="External customer id."),
    at: str | None = typer.Option(None, "--at", help="Usage period as of (default: now)."),
    limit: int = typer.Option(10, "--limit", min=0, help="How many recent transactions."),
    as_json: bool = typer.Option(False, "--json", help="Lago-shaped JSON."),
) -> None:
    """Balances (credits and money), ongoing usage and the last transactions."""
    from tallyflow.tasks.wallets import WalletError, wallet_overview

    try:
        overview = wallet_overview(billing_engine(), customer, parse_moment(at), limit)
    except WalletError as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(overview, indent=2))
        return
    console = Console()
    table = Table(title=f"wallets of {customer}")
    for column in ("wallet", "status", "prio", "credits", "money", "ongoing credits",
                   "pending credits", "consumed credits", "expires"):
        table.add_column(column, justify="left" if column in ("wallet", "status") else "right")
    for wallet in overview["wallets"]:
        table.add_row(
            wallet["code"], wallet["status"], str(wallet["priority"]),
            wallet["credits_balance"], money(wallet["balance_cents"], wallet["currency"]),
            wallet["credits_ongoing_balance"], wallet["pending_credits"],
            wallet["consumed_credits"], wallet["expiration_at"] or "",
        )
    console.print(table)
    usage = overview["ongoing_usage"]
    console.print(
        f"ongoing usage: {usage['amount_cents']} cents, deducted {usage['deducted_cents']},"
        f" not yet deducted {usage['undeducted_cents']} ({_usage_source(usage)})"
    )
    if overview["wallet_transactions"]:
        recent = Table(title="last transactions")
        for column in ("id", "wallet", "type", "status", "source", "credits", "cents",
                       "subscription"):
            recent.add_column(column)
        for t in overview["wallet_transactions"]:
            recent.add_row(
                t["lago_id"], t["wallet_code"], t["transaction_type"], t["status"],
                t["source"], t["credit_amount"], str(t["amount_cents"]),
                t["external_subscription_id"] or "",
            )
        console.print(recent)


def _usage_source(usage: Any) -> str:
    """Where the ongoing usage came from: the balance refresh's last pass, or rated live."""
    sources = {s["source"] for s in usage["subscriptions"]}
    if sources == {"running_usage"}:
        return f"balance refresh as of {usage['refreshed_at']}"
    if "running_usage" in sources:
        return f"balance refresh as of {usage['refreshed_at']}, some rated live"
    return "rated live"


@app.command("top-up")
def top_up(
    customer: str = typer.Argument(..., help="External customer id."),
    wallet: str | None = typer.Option(None, "--wallet", help="Wallet code (if several)."),
    paid_credits: str = typer.Option("0", "--paid-credits", help="Purchased credits."),
    granted_credits: str = typer.Option("0", "--granted-credits", help="Free credits."),
    settle_paid: bool | None = typer.Option(
        None, "--settle-paid/--pending-paid",
        help="Settle purchased credits now (default: TALLYFLOW_WALLETS_SETTLE_PAID, else pending"
             " until mark-paid).",
    ),
    key: str | None = typer.Option(
        None, "--key", help="Idempotency key: the same key posts once however often retried."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add credits to a customer's wallet (granted settle at once; paid when marked paid)."""
    from tallyflow.tasks.invoicing import issue_credit_invoices
    from tallyflow.tasks.wallets import WalletError
    from tallyflow.tasks.wallets import top_up as do_top_up

    try:
        done = do_top_up(
            billing_engine(), customer, _credits(paid_credits, "--paid-credits"),
            _credits(granted_credits, "--granted-credits"), wallet_code=wallet,
            settle_paid=settle_paid, key=key,
        )
    except WalletError as exc:
        _fail(str(exc))
        return
    issued = issue_credit_invoices(billing_engine())
    result = {"wallet": done.wallet_code, "lago_wallet_id": str(done.wallet_id),
              "transactions": done.posted, "idempotency_key": done.idempotency_key,
              "credit_invoices": [i["number"] for i in issued]}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{done.posted} transaction(s) posted to wallet {done.wallet_code}"
                   f" (key {done.idempotency_key})")
        for invoice in issued:
            typer.echo(f"credit invoice {invoice['number']}: {invoice['credits']} credits,"
                       f" {invoice['amount_cents']} {invoice['currency']} cents; the credits"
                       f" settle when it is paid (tallyflow invoices mark-paid"
                       f" {invoice['number']})")


@app.command("mark-paid")
def mark_paid(
    customer: str = typer.Argument(..., help="External customer id."),
    wallet: str | None = typer.Option(None, "--wallet", help="Only this wallet."),
    transaction: int | None = typer.Option(None, "--transaction", help="Only this transaction."),
) -> None:
    """Settle pending purchased credits: they join the balance now."""
    from tallyflow.tasks.wallets import WalletError
    from tallyflow.tasks.wallets import mark_paid as do_mark_paid

    try:
        settled = do_mark_paid(billing_engine(), customer, wallet, transaction)
    except WalletError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{settled} transaction(s) settled")


@app.command("alert-rule")
def alert_rule(
    below: str | None = typer.Option(None, "--below", help="Alert when credits fall below X."),
    depleted: bool = typer.Option(False, "--depleted", help="(Always on) balance <= 0."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's wallet."),
    wallet: str | None = typer.Option(None, "--wallet", help="Wallet code (with --customer)."),
) -> None:
    """Add an alert threshold (all wallets unless --customer); depleted alerts are built in."""
    from tallyflow.tasks.wallets import WalletError, add_alert_rule

    if below is None:
        if depleted:
            typer.echo("balance depleted alerts are always on")
            return
        _fail("say --below CREDITS")
        return
    try:
        rule = add_alert_rule(billing_engine(), "balance_below", _credits(below, "--below"),
                              customer, wallet)
    except WalletError as exc:
        _fail(str(exc))
        return
    typer.echo(f"alert rule {rule}: balance below {below} credits")


@app.command("deduct")
def deduct(
    at: str | None = typer.Option(None, "--at", help="as_of: ISO time with offset or epoch."),
    customers: list[str] = typer.Option([], "--customer", "-c", help="Only these customers."),
    settle_paid: bool | None = typer.Option(None, "--settle-paid/--pending-paid"),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Run the wallet-deductions flow now (as_of defaults to the current time)."""
    billing_engine()
    moment = parse_moment(at) or datetime.now(UTC)
    with flow_session():
        from tallyflow.flows.wallet_deductions import wallet_deductions

        summary = wallet_deductions(as_of=moment, customers=customers or None,
                                    settle_paid=settle_paid)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    table = Table(title=f"wallet deductions as of {summary['as_of']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("customers", "wallets_touched", "transactions", "credits_deducted",
                "amount_cents_deducted", "corrections", "top_ups", "expired", "alerts",
                "negative_wallets", "uncovered_cents"):
        table.add_row(key.replace("_", " "), str(summary.get(key, 0)))
    Console().print(table)


@app.command("runs")
def runs(
    limit: int = typer.Option(10, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run history of the wallet flow (newest first)."""
    from tallyflow.tasks.wallets import recent_runs

    rows: list[dict[str, Any]] = recent_runs(billing_engine(), limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    table = Table(title="wallet runs")
    columns = ("id", "as_of", "status", "customers", "transactions", "credits_deducted",
               "corrections", "alerts", "negative_wallets")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console().print(table)


@app.command("balance")
def balance(customer: str = typer.Argument(..., help="External customer id.")) -> None:
    """The running balance a gateway reads (JSON): ongoing balance and ``allowed``, from the
    figures ``refresh-balances`` keeps (docs/architecture.md §19)."""
    from tallyflow.infra.settings import get_settings
    from tallyflow.tasks.wallets import WalletError, customer_balance

    try:
        with billing_engine().connect() as conn:
            answer = customer_balance(conn, customer, get_settings().balance_overdraft_cents)
    except WalletError as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(answer, indent=2))


@app.command("refresh-balances")
def refresh_balances(
    every: float = typer.Option(0.0, "--every", min=0,
                                help="Seconds between passes; 0: one pass and exit."),
) -> None:
    """Rate the subscriptions with new events into the running balances (one pass, or a loop
    with ``--every``)."""
    import time

    from tallyflow.tasks.wallets import refresh_running_usage

    engine = billing_engine()
    while True:
        summary = refresh_running_usage(engine)
        typer.echo(f"rated {summary.rated} subscription(s); watermark {summary.watermark}")
        if not every:
            return
        time.sleep(every)
