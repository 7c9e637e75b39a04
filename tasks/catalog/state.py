"""What the database holds: each kind's stored documents, keys and digests.

An apply compares the files against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import (
    Connection,
    Table,
    cast,
    exists,
    select,
)
from sqlalchemy.types import Text

from tallyflow.models import tables as t
from tallyflow.models.catalog import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    CUSTOMER,
    KINDS,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    Catalog,
    loads,
    parse_body,
)


class _Stored(NamedTuple):
    id: int
    digest: str


@dataclass
class _State:
    catalog: Catalog = field(default_factory=Catalog)
    rows: dict[str, dict[tuple[str, ...], _Stored]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )


def _keyed_documents(conn: Connection, kind: str) -> list[tuple[tuple[str, ...], int, str, str]]:
    """``(natural key, id, digest, document text)`` of every stored object of one kind.

    The document is read as text and parsed with ``Decimal`` numbers so nothing goes through
    float on the way back out.
    """
    if kind == WALLET:
        query = (
            select(
                t.customers.c.external_id,
                t.wallets.c.code,
                t.wallets.c.id,
                t.wallets.c.digest,
                cast(t.wallets.c.document, Text),
            )
            .join(t.customers, t.customers.c.id == t.wallets.c.customer_id)
            .order_by(t.customers.c.external_id, t.wallets.c.code)
        )
        return [((r[0], r[1]), r[2], r[3], r[4]) for r in conn.execute(query)]
    if kind == APPLIED_COUPON:
        # those a catalog document applied (the API's and the CLI's have no document); the
        # latest of a customer and coupon wins
        query = (
            select(t.customers.c.external_id, t.coupons.c.code, t.applied_coupons.c.id,
                   t.applied_coupons.c.digest, cast(t.applied_coupons.c.document, Text))
            .join(t.customers, t.customers.c.id == t.applied_coupons.c.customer_id)
            .join(t.coupons, t.coupons.c.id == t.applied_coupons.c.coupon_id)
            .where(t.applied_coupons.c.document.is_not(None))
            .order_by(t.customers.c.external_id, t.coupons.c.code, t.applied_coupons.c.id)
        )
        return [((r[0], r[1]), r[2], r[3], r[4]) for r in conn.execute(query)]
    table, key_column = _KEYED_TABLES[kind]
    query = select(
        table.c[key_column], table.c.id, table.c.digest, cast(table.c.document, Text)
    ).order_by(table.c[key_column])
    if kind == SUBSCRIPTION:
        # The current row of each external id: a plan change's old rows are history.
        later = t.subscriptions.alias("later")
        query = query.where(~exists().where(later.c.previous_subscription_id == table.c.id))
        # A canceled row (Lago's cancel of a pending subscription) yields to a newer row of its
        # external id: the last row read for a key wins.
        query = query.order_by(None).order_by(
            table.c[key_column], table.c.status != "canceled", table.c.id)
    return [((r[0],), r[1], r[2], r[3]) for r in conn.execute(query)]


_KEYED_TABLES: dict[str, tuple[Table, str]] = {
    TAX: (t.taxes, "code"),
    BILLING_ENTITY: (t.billing_entities, "code"),
    BILLABLE_METRIC: (t.billable_metrics, "code"),
    PLAN: (t.plans, "code"),
    CUSTOMER: (t.customers, "external_id"),
    SUBSCRIPTION: (t.subscriptions, "external_id"),
    ADD_ON: (t.add_ons, "code"),
    COUPON: (t.coupons, "code"),
}


def _read_state(conn: Connection) -> _State:
    state = _State()
    for kind in KINDS:
        for key, row_id, stored_digest, document in _keyed_documents(conn, kind):
            state.rows[kind][key] = _Stored(row_id, stored_digest)
            model, _ = parse_body(kind, loads(document))
            if model is None:  # written by an older version with other rules: still known
                state.catalog.broken.add((kind, key))
            else:
                state.catalog.objects[kind][key] = model
    return state
