"""Shared builders for the wallet tests (no tests here): catalog rows and usage_amounts in SQL,
one run of the wallet steps without Prefect, and canonical views of the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.tasks import wallets as w

AS_OF = datetime(2025, 3, 15, 10, tzinfo=UTC)
PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
PERIOD_END = datetime(2025, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)


@dataclass(frozen=True)
class WalletSpec:
    code: str
    paid: str = "0"
    granted: str = "0"
    rate: str = "1"
    priority: int = 50
    expiration_at: datetime | None = None
    currency: str = "USD"


def seed(engine: Engine, customers: dict[str, list[WalletSpec]]) -> None:
    """Customers ``c`` with one subscription ``sub_<c>`` each and the given wallets (rows are
    written in order, so created_at/id order is the list order)."""
    with engine.begin() as conn:
        plan = conn.execute(
            text(
                "insert into plans (code, name, interval, amount_cents, amount_currency,"
                " document, digest) values ('plan', 'plan', 'monthly', 0, 'USD', '{}', 'x')"
                " on conflict (code) do update set name = excluded.name returning id"
            )
        ).scalar_one()
        for external_id, specs in customers.items():
            customer = conn.execute(
                text(
                    "insert into customers (external_id, currency, document, digest)"
                    " values (:e, 'USD', '{}', 'x') returning id"
                ),
                {"e": external_id},
            ).scalar_one()
            conn.execute(
                text(
                    "insert into subscriptions (external_id, customer_id, plan_id,"
                    " subscription_at, document, digest) values (:e, :c, :p,"
                    " '2025-01-01T00:00:00Z', '{}', 'x')"
                ),
                {"e": f"sub_{external_id}", "c": customer, "p": plan},
            )
            for spec in specs:
                add_wallet(conn, customer, spec)


def add_wallet(conn: Any, customer_id: int, spec: WalletSpec) -> int:
    return int(
        conn.execute(
            text(
                "insert into wallets (customer_id, code, name, currency, rate_amount,"
                " paid_credits, granted_credits, priority, expiration_at, document, digest,"
                " created_at) values (:c, :code, :code, :cur, :rate, :paid, :granted, :prio,"
                " :exp, '{}', 'x', clock_timestamp()) returning id"
            ),
            {
                "c": customer_id, "code": spec.code, "cur": spec.currency,
                "rate": Decimal(spec.rate), "paid": Decimal(spec.paid),
                "granted": Decimal(spec.granted), "prio": spec.priority,
                "exp": spec.expiration_at,
            },
        ).scalar_one()
    )


def set_usage(
    engine: Engine, customer: str, amount_cents: int | str, *,
    period_start: datetime = PERIOD_START, period_end: datetime = PERIOD_END,
    as_of: datetime = AS_OF, currency: str = "USD",
) -> None:
    """What the latest usage snapshot says is owed for ``sub_<customer>`` in a period."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                insert into usage_amounts (subscription_id, period_start,
                  external_subscription_id, period_end, as_of, currency, amount_cents,
                  precise_amount_cents, snapshot_id, snapshot_as_of)
                select s.id, :ps, s.external_id, :pe, :as_of, :cur, :amount, :amount,
                  (select coalesce(max(snapshot_id), 0) + 1 from usage_amounts), :as_of
                from subscriptions s where s.external_id = :sub
                on conflict (subscription_id, period_start) do update set
                  amount_cents = excluded.amount_cents,
                  precise_amount_cents = excluded.precise_amount_cents,
                  as_of = excluded.as_of, snapshot_id = excluded.snapshot_id,
                  snapshot_as_of = excluded.snapshot_as_of
                """
            ),
            {"ps": period_start, "pe": period_end, "as_of": as_of, "cur": currency,
             "amount": Decimal(amount_cents), "sub": f"sub_{customer}"},
        )


def run_once(
    engine: Engine, as_of: datetime = AS_OF, settle_paid: bool = True, batch_size: int = 1000
) -> dict[str, Any]:
    """The flow's steps in the flow's order, without Prefect."""
    run_id = w.start_run(engine, as_of)
    opened = w.open_wallets(engine, as_of, settle_paid, run_id)
    expired = w.expire_wallets(engine, as_of, run_id)
    interval = w.interval_top_ups(engine, as_of, settle_paid, run_id)
    due = w.due_customers(engine, as_of)
    batches = [
        w.deduct_customers(engine, ids, as_of, run_id) for ids in w.chunks(due, batch_size)
    ]
    threshold = w.threshold_top_ups(engine, as_of, settle_paid, run_id)
    alerts = w.evaluate_alerts(engine, as_of, run_id)
    return {
        "opened": opened, "expired": expired, "interval": interval, "threshold": threshold,
        "alerts": alerts, "batches": batches, "due": due,
        "transactions": sum(b.transactions for b in batches),
    }


def ledger(engine: Engine) -> list[tuple[Any, ...]]:
    """The ledger without ids, times or run ids: equal for equivalent histories."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "select idempotency_key, wallet_id, direction, status, source, credits,"
                    " granted_credits, amount_cents from wallet_transactions"
                    " order by idempotency_key"
                )
            )
        ]


def balances(engine: Engine) -> dict[str, dict[str, Decimal]]:
    """Per wallet code (``customer/code``): the stored balances."""
    with engine.connect() as conn:
        return {
            f"{r.external_id}/{r.code}": {
                "credits": r.credits_balance, "cents": r.balance_cents,
                "granted": r.granted_credits_balance, "pending": r.pending_credits,
                "consumed": r.consumed_credits, "consumed_cents": r.consumed_amount_cents,
            }
            for r in conn.execute(
                text(
                    "select c.external_id, w.code, b.* from wallet_balances b"
                    " join wallets w on w.id = b.wallet_id join customers c on c.id = w.customer_id"
                )
            )
        }


def assert_balances_match_ledger(engine: Engine) -> None:
    """Invariant: every stored balance is the settled ledger's sum."""
    with engine.connect() as conn:
        bad = conn.execute(
            text(
                """
                select b.wallet_id from wallet_balances b
                left join (
                  select wallet_id,
                    sum(case when direction = 'inbound' then credits else -credits end) as c,
                    sum(case when direction = 'inbound' then amount_cents
                             else -amount_cents end) as m
                  from wallet_transactions where status = 'settled' group by wallet_id
                ) l on l.wallet_id = b.wallet_id
                where b.credits_balance <> coalesce(l.c, 0) or b.balance_cents <> coalesce(l.m, 0)
                """
            )
        ).all()
        assert bad == [], f"balances differ from the ledger for wallets {bad}"
        drift = conn.execute(
            text(
                """
                select p.subscription_id from wallet_usage_positions p
                left join (
                  select subscription_id, period_start,
                    sum(case when direction = 'outbound' then amount_cents
                             else -amount_cents end) as m
                  from wallet_transactions where source = 'usage'
                  group by subscription_id, period_start
                ) l using (subscription_id, period_start)
                where p.deducted_cents <> coalesce(l.m, 0)
                """
            )
        ).all()
        assert drift == [], f"positions differ from the ledger for {drift}"


def usage_deducted_cents(engine: Engine, customer: str) -> Decimal:
    with engine.connect() as conn:
        return Decimal(
            conn.execute(
                text(
                    """
                    select coalesce(sum(case when t.direction = 'outbound' then t.amount_cents
                                              else -t.amount_cents end), 0)
                    from wallet_transactions t join customers c on c.id = t.customer_id
                    where t.source = 'usage' and c.external_id = :c
                    """
                ),
                {"c": customer},
            ).scalar_one()
        )
