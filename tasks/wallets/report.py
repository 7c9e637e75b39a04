"""What one wallet run moved per customer, for the billing run's artifact."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prefect import task
from sqlalchemy import text

from tallyflow.infra.resources import billing_engine
from tallyflow.tasks.runs import transient_retries

_MOVEMENTS = text("""
    select c.external_id as customer,
           coalesce(sum(t.amount_cents) filter (where t.direction = 'outbound'), 0) as deducted,
           coalesce(sum(t.amount_cents) filter (where t.direction = 'inbound'), 0) as credited,
           count(*) as transactions
      from wallet_transactions t
      join customers c on c.id = t.customer_id
     where t.run_id = :run_id and t.source = 'usage'
     group by c.external_id
     order by deducted desc, credited desc, c.external_id
""")


@task(name="wallet-run-movements", **transient_retries())
def customer_movements_task(run_id: int) -> list[dict[str, Any]]:
    """Per customer: usage deducted and credited back (corrections) by this wallet run, in
    cents. Reading the ledger rows the run wrote (not recomputing) is what makes the artifact
    agree with the ledger by construction."""
    with billing_engine().connect() as conn:
        return [
            {"customer": row.customer, "deducted_cents": Decimal(row.deducted),
             "credited_back_cents": Decimal(row.credited), "transactions": int(row.transactions)}
            for row in conn.execute(_MOVEMENTS, {"run_id": run_id})
        ]
