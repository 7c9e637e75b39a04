"""``tallyflow wallets``: the Mistral demo customer through show, top-up, mark-paid, deduct."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli import app
from tasks.catalog import apply_catalog

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mistral"
AT = "2025-03-15T10:00:00Z"


def _usage(engine: Engine, cents: int) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            """
            insert into usage_amounts (subscription_id, period_start, external_subscription_id,
              period_end, as_of, currency, amount_cents, precise_amount_cents, snapshot_id)
            select id, '2025-03-01T05:00:00Z', external_id, '2025-04-01T03:59:59.999999Z',
              :at, 'USD', :c, :c, 1 from subscriptions where external_id = 'sub_acme_001'
            on conflict (subscription_id, period_start) do update
              set amount_cents = excluded.amount_cents
            """
        ), {"c": cents, "at": AT})


def _show(*extra: str) -> dict:
    result = runner.invoke(app, ["wallets", "show", "acme", "--at", AT, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_wallet_commands_on_the_mistral_demo(engine: Engine, prefect_harness: None) -> None:
    assert apply_catalog(engine, [EXAMPLE]).ok
    _usage(engine, 200)  # 2,000,000 mistral-small input tokens

    # Before any run: the wallet exists, nothing posted yet, 200 cents not yet deducted.
    before = _show()
    assert before["wallets"][0]["credits_balance"] == "0.00000"
    assert before["ongoing_usage"]["undeducted_cents"] == 200

    ran = runner.invoke(app, ["wallets", "deduct", "--at", AT, "--pending-paid", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["transactions"] == 1
    wallet = _show()["wallets"][0]
    # 25 granted settled, 100 purchased pending: 25 - 2 = 23.
    assert (wallet["credits_balance"], wallet["pending_credits"]) == ("23.00000", "100.00000")

    paid = runner.invoke(app, ["wallets", "mark-paid", "acme"])
    assert paid.exit_code == 0 and "1 transaction(s) settled" in paid.stdout
    shown = _show()
    wallet = shown["wallets"][0]
    assert wallet["credits_balance"] == "123.00000" and wallet["balance_cents"] == 12300
    assert wallet["code"] == "prepaid_credits" and wallet["rate_amount"] == "1.0"
    assert wallet["consumed_amount_cents"] == 200 and wallet["status"] == "active"
    for field in ("lago_id", "name", "currency", "credits_ongoing_balance",
                  "ongoing_balance_cents", "consumed_credits", "ongoing_usage_balance_cents",
                  "expiration_at"):
        assert field in wallet

    top = runner.invoke(app, ["wallets", "top-up", "acme", "--granted-credits", "7.5",
                              "--key", "k1"])
    assert top.exit_code == 0, top.output
    again = runner.invoke(app, ["wallets", "top-up", "acme", "--granted-credits", "7.5",
                                "--key", "k1"])
    assert "0 transaction(s)" in again.stdout
    assert _show()["wallets"][0]["credits_balance"] == "130.50000"

    # Usage grows between runs: ongoing balance already shows it, the next run deducts it.
    _usage(engine, 350)
    pending = _show()["wallets"][0]
    assert pending["credits_ongoing_balance"] == "129.00000"
    assert pending["credits_balance"] == "130.50000"

    table = runner.invoke(app, ["wallets", "show", "acme", "--at", AT])
    assert table.exit_code == 0 and "wallets of acme" in table.stdout
    assert "last transactions" in table.stdout
    runs = runner.invoke(app, ["wallets", "runs", "--json"])
    assert runs.exit_code == 0 and json.loads(runs.stdout)[0]["status"] == "completed"

    bad = runner.invoke(app, ["wallets", "show", "nobody"])
    assert bad.exit_code == 1 and "unknown customer" in bad.stderr
    neg = runner.invoke(app, ["wallets", "top-up", "acme", "--paid-credits", "-1"])
    assert neg.exit_code != 0
    rule = runner.invoke(app, ["wallets", "alert-rule", "--below", "5"])
    assert rule.exit_code == 0 and "balance below 5" in rule.stdout
