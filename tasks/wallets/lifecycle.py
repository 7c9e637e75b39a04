"""Opening wallets (initial granted and paid credits) and expiring them, as ledger postings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.models.wallets import (
    ZERO,
)
from tallyflow.tasks.wallets.ledger import LedgerRow, _top_up_rows, post, settle_paid_default

_OPEN = text(
    """
    insert into wallet_balances (wallet_id, customer_id)
    select w.id, w.customer_id from wallets w
    where not exists (select 1 from wallet_balances b where b.wallet_id = w.id)
      and (cast(:only as bigint[]) is null or w.customer_id = any(cast(:only as bigint[])))
    order by w.id
    on conflict (wallet_id) do nothing
    returning wallet_id
    """
)


def open_wallets(
    engine: Engine, as_of: datetime, settle_paid: bool, run_id: int | None = None,
    customer_ids: Sequence[int] | None = None,
) -> int:
    """Give every new catalog wallet a balance row and post its initial top-up.

    The catalog's ``paid_credits``/``granted_credits`` are the wallet's *initial* top-up:
    posted with the keys ``initial:<wallet>:granted|paid`` in the transaction that creates the
    balance row, so a re-applied or edited catalog never posts them again. Returns how many
    wallets were opened.
    """
    with engine.begin() as conn:
        only = list(customer_ids) if customer_ids is not None else None
        opened = [int(r.wallet_id) for r in conn.execute(_OPEN, {"only": only})]
        if not opened:
            return 0
        rows: list[LedgerRow] = []
        for w in conn.execute(
            text(
                "select id, customer_id, rate_amount, currency, paid_credits, granted_credits"
                " from wallets"
                " where id = any(cast(:ids as bigint[])) order by id"
            ),
            {"ids": opened},
        ):
            rows.extend(_top_up_rows(
                w.id, w.customer_id, w.rate_amount, w.paid_credits, w.granted_credits,
                currency=w.currency, settle_paid=settle_paid, source="initial",
                key=f"initial:{w.id}",
            ))
        post(conn, rows, as_of, run_id)
        failpoint("wallets.before_open_commit")
    return len(opened)


def expire_wallets(engine: Engine, as_of: datetime, run_id: int | None = None) -> list[int]:
    """Terminate wallets whose ``expiration_at`` has passed as of the run's time.

    What is left is voided by one outbound ``expiration`` transaction (key
    ``expire:<wallet>``); pending purchases are marked voided. Returns the wallets expired.
    """
    with engine.begin() as conn:
        due = conn.execute(
            text(
                """
                select b.wallet_id, b.customer_id, b.credits_balance, b.granted_credits_balance,
                       b.balance_cents
                from wallet_balances b join wallets w on w.id = b.wallet_id
                where w.status = 'active' and w.expiration_at <= :as_of
                order by b.wallet_id
                for update of b
                """
            ),
            {"as_of": as_of},
        ).all()
        if not due:
            return []
        rows = [
            LedgerRow(
                r.wallet_id, r.customer_id, "outbound", "settled", "expiration",
                r.credits_balance, max(ZERO, r.balance_cents), f"expire:{r.wallet_id}",
                granted_credits=max(ZERO, r.granted_credits_balance),
                note="remaining credits voided at expiration",
            )
            for r in due
            if r.credits_balance > 0
        ]
        post(conn, rows, as_of, run_id)
        ids = [r.wallet_id for r in due]
        conn.execute(
            text(
                """
                with voided as (
                  update wallet_transactions set status = 'voided'
                  where wallet_id = any(cast(:ids as bigint[])) and status = 'pending'
                  returning wallet_id, credits
                ), moved as (select wallet_id, sum(credits) as credits from voided
                             group by wallet_id)
                update wallet_balances b set pending_credits = b.pending_credits - m.credits
                from moved m where b.wallet_id = m.wallet_id
                """
            ),
            {"ids": ids},
        )
        conn.execute(
            text("update wallets set status = 'terminated' where id = any(cast(:ids as bigint[]))"),
            {"ids": ids},
        )
        conn.execute(
            text(
                "update wallet_balances set terminated_at = :as_of, updated_at = now()"
                " where wallet_id = any(cast(:ids as bigint[]))"
            ),
            {"ids": ids, "as_of": as_of},
        )
    return ids


def open_catalog_wallets(engine: Engine, as_of: datetime | None = None) -> int:
    """Open the wallets a catalog apply created, at once: their granted credits settle now
    (as Lago does at creation), purchased ones stay pending until paid (unless
    TALLYFLOW_WALLETS_SETTLE_PAID). Idempotent: the initial top-up is posted once per wallet."""
    return open_wallets(engine, as_of or datetime.now(UTC), settle_paid_default())
