"""Credit invoices: a paid wallet top-up is invoiced (Lago's ``invoice_type: "credit"``), and
paying that invoice is what settles the purchased credits.

As in Lago (lago-semantics, "Wallets"): granted credits settle at once; purchased credits are
``pending`` until paid, and Lago bills them with a credit invoice, one per wallet transaction,
with one fee of type ``credit`` (units = credits, amount = credits x rate, no taxes). Here:

- Every paid top-up ledger row (initial, manual, interval or threshold; key ``...:paid``) gets
  its credit invoice, finalized and numbered at once in the customer's sequence (no gaps: the
  customer rows are locked, as the period close locks them). The fee names the wallet
  transaction under a unique key, so a rerun, a retry or two concurrent runs issue it once.
  The step runs right after a CLI top-up or catalog apply and in every period close, so a
  top-up made by the wallet flow is invoiced in the same billing cycle.
- ``invoices mark-paid`` on a credit invoice settles its pending credits in the same
  transaction (the balance rises then, not before); ``mark-failed`` leaves them pending.
  ``wallets mark-paid`` (settling by customer) marks the credit invoices it paid as paid too.
- With ``TALLYFLOW_WALLETS_SETTLE_PAID`` (prepaid contracts) the credits settle at once; the
  credit invoice is still issued, and marking it paid moves no credits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.resources import billing_engine
from tallyflow.models import number_rule
from tallyflow.models.lago.resources import Invoice
from tallyflow.tasks.invoicing.announce import announce_invoices
from tallyflow.tasks.invoicing.documents import InvoiceError, find_invoice, render_sealed
from tallyflow.tasks.invoicing.inputs import load_close_catalog
from tallyflow.tasks.invoicing.watermark import invoice_prefix
from tallyflow.tasks.invoicing.writing import customer_object
from tallyflow.tasks.runs import transient_retries
from tallyflow.tasks.wallets import lock_customers, settle_pending

PAID_TOP_UP_SOURCES: Final = ("initial", "manual", "interval", "threshold")

_UNINVOICED = """
    select t.id, t.wallet_id, t.customer_id, t.credits, t.amount_cents, t.as_of,
           w.code, w.name, w.currency
    from wallet_transactions t join wallets w on w.id = t.wallet_id
    where t.direction = 'inbound' and right(t.idempotency_key, 5) = :suffix
      and t.source = any(cast(:sources as text[])) and t.status <> 'voided'
      and not exists (select 1 from invoice_fees f where f.wallet_transaction_id = t.id)
"""


def _candidates(conn: Connection, customer_ids: Sequence[int] | None) -> list[Any]:
    query = _UNINVOICED
    params: dict[str, Any] = {"sources": list(PAID_TOP_UP_SOURCES), "suffix": ":paid"}
    if customer_ids is not None:
        query += " and t.customer_id = any(cast(:customers as bigint[]))"
        params["customers"] = list(customer_ids)
    return list(conn.execute(text(query + " order by t.customer_id, t.id"), params).all())


def issue_credit_invoices(
    engine: Engine, customer_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Issue the credit invoice of every paid top-up that has none (of these customers, or of
    all). Returns what was issued: invoice number, customer, credits and amount."""
    with engine.connect() as conn:
        wanted = sorted({int(r.customer_id) for r in _candidates(conn, customer_ids)})
    if not wanted:
        return []
    issued: list[dict[str, Any]] = []
    with engine.begin() as conn:
        # Same lock as the period close: numbers continue each customer's sequence, no gaps.
        conn.execute(text("select id from customers where id = any(cast(:ids as bigint[]))"
                          " order by id for update"), {"ids": wanted})
        rows = _candidates(conn, wanted)  # again, under the lock: a concurrent run is done
        if not rows:
            return []
        catalog = load_close_catalog(conn)
        last = {int(r.customer_id): int(r.seq) for r in conn.execute(text(
            "select customer_id, coalesce(max(sequential_id), 0) as seq from invoices"
            " where customer_id = any(cast(:ids as bigint[])) group by customer_id"),
            {"ids": wanted})}
        ids: list[int] = []
        for row in rows:
            customer = catalog.customers[int(row.customer_id)]
            zone = ZoneInfo(customer.timezone or "UTC")
            day = row.as_of.astimezone(zone).date()
            amount = row.amount_cents
            invoice_id = int(conn.execute(text(
                """
                insert into invoices (lago_id, customer_id, invoice_type, issuing_date, currency,
                  fees_amount_cents, taxes_amount_cents, total_amount_cents, customer,
                  billing_entity, finalize_after, net_payment_term, payment_due_date)
                values (:lago, :customer, 'credit', :day, :currency, :amount, 0, :amount,
                  cast(:customer_object as jsonb), cast(:entity as jsonb), :at, :term,
                  cast(:day as date) + :term)
                returning id
                """), {
                "lago": str(uuid.uuid4()), "customer": customer.id, "day": day,
                "currency": row.currency, "amount": amount, "at": row.as_of,
                "customer_object": _json(customer_object(customer)),
                "entity": _json(dict(customer.entity.document)) if customer.entity else None,
                "term": customer.net_payment_term,
            }).scalar_one())
            conn.execute(text(
                """
                insert into invoice_fees (lago_id, invoice_id, position, item_type, code, name,
                  invoice_display_name, units, events_count, amount_cents, precise_amount_cents,
                  taxes_rate, taxes_precise_amount_cents, taxes_amount_cents, total_amount_cents,
                  from_datetime, to_datetime, wallet_transaction_id)
                values (:lago, :invoice, 0, 'credit', :code, :name, :name, :credits, 0, :amount,
                  :amount, 0, 0, 0, :amount, :at, :at, :transaction)
                """), {
                "lago": str(uuid.uuid4()), "invoice": invoice_id, "code": row.code,
                "name": row.name or row.code, "credits": row.credits, "amount": amount,
                "at": row.as_of, "transaction": row.id,
            })
            seq = last.get(customer.id, 0) + 1
            last[customer.id] = seq
            prefix = (customer.entity.prefix if customer.entity and customer.entity.prefix
                      else invoice_prefix())
            number = f"{prefix}-{customer.id:03d}-{seq:03d}"
            conn.execute(text("update invoices set sequential_id = :seq, number = :number"
                              " where id = :id"), {"seq": seq, "number": number,
                                                   "id": invoice_id})
            ids.append(invoice_id)
            issued.append({"invoice_id": invoice_id, "number": number,
                           "customer": customer.external_id, "wallet": row.code,
                           "credits": str(row.credits), "amount_cents": int(amount),
                           "currency": row.currency})
        failpoint("credit_invoices.before_seal")
        _seal(conn, ids)
    return issued


def _seal(conn: Connection, ids: list[int]) -> None:
    """Finalize these credit invoices with their documents, and announce them."""
    documents = render_sealed(conn, ids)
    conn.execute(text(
        """
        update invoices v set status = 'finalized', finalized_at = now(), html = r.html,
          updated_at = now()
        from unnest(cast(:ids as bigint[]), cast(:html as text[])) as r(id, html)
        where v.id = r.id
        """), {"ids": ids, "html": [documents[i] for i in ids]})
    announce_invoices(conn, ids)


def _json(value: Any) -> str:
    # integers beyond 64 bits written exactly, not refused (docs/architecture.md §7)
    return number_rule.dumps(value, default=str).decode()


def record_payment(engine: Engine, key: str, status: str) -> Invoice:
    """Record a finalized invoice's payment (``succeeded``) or failed payment (``failed``).
    For a credit invoice, ``succeeded`` also settles its pending purchased credits, in the
    same transaction; ``failed`` leaves them pending (Lago)."""
    invoice = find_invoice(engine, key)
    if invoice is None:
        raise InvoiceError(f"no invoice {key!r} (hint: `tallyflow invoices list`)")
    if invoice["status"] == "voided":  # docs/architecture.md §13
        raise InvoiceError(f"invoice {key!r} is voided: nothing is due on it")
    if invoice["status"] != "finalized":
        raise InvoiceError(f"invoice {key!r} is a draft: only a finalized invoice is paid "
                           "(hint: it is finalized once its period is settled)")
    with engine.begin() as conn:
        row = conn.execute(text("select id, customer_id from invoices where lago_id = :l"
                                " for update"), {"l": invoice["lago_id"]}).one()
        if invoice["invoice_type"] == "credit" and status == "succeeded":
            lock_customers(conn, [int(row.customer_id)])
            settle_pending(conn, invoice_id=row.id)
        conn.execute(text("update invoices set payment_status = :s, updated_at = now()"
                          " where id = :id"), {"s": status, "id": row.id})
        announce_invoices(conn, [row.id], "invoice.payment_status_updated")
    found = find_invoice(engine, key)
    assert found is not None
    return found


@task(name="issue-credit-invoices", **transient_retries(retries=3, backoff_factor=1))
def issue_credit_invoices_task() -> int:
    """Invoice every paid top-up not invoiced yet (top-ups of the wallet flow included)."""
    return len(issue_credit_invoices(billing_engine()))
