"""Catalog rows as the HTTP API reads them: a page of one kind, one object by its key, the
stored document of one row, and the few lookups its checks need (docs/architecture.md §1:
the API holds no SQL of its own; it shapes what these return into Lago's objects).

A page is read in SQL (``LIMIT``/``OFFSET`` with a ``count(*)`` of the same filter): a page of
20 reads 20 rows, whatever the catalog holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, Text, cast, select, text

from tallyflow.models import tables
from tallyflow.models.catalog import loads


@dataclass(frozen=True)
class CatalogQuery:
    """Where one kind of catalog object lives: its table, the column its key is in, the
    columns a list may be filtered on (query parameter -> SQL column), and for a kind read
    with other tables, the extra columns and the ``from ... join ...`` clause."""

    table: str
    key: str
    filters: dict[str, str] = field(default_factory=dict)
    # list filters that take several values (``status[]``): parameter -> SQL expression
    lists: dict[str, str] = field(default_factory=dict)
    columns: str = ""
    join: str = ""
    hidden: str = ""  # rows not shown (a soft-deleted plan)
    first: str = "t.id desc"  # which row a key names when several share it

    @property
    def source(self) -> str:
        return self.join or f" from {self.table} t"


def catalog_page(engine: Engine, query: CatalogQuery, where: dict[str, str], page: int,
                 per_page: int, any_of: dict[str, list[str]] | None = None,
                 ) -> tuple[list[Row[Any]], int]:
    """One page of rows (in id order) and how many rows the filter matches in all. ``where``
    holds only names of ``query.filters``, ``any_of`` only names of ``query.lists`` (their
    SQL is the query's, never the caller's)."""
    clauses = [f"{query.filters[name]} = :{name}" for name in where]
    clauses += [f"{query.lists[name]} = any(:{name})" for name in any_of or {}]
    if query.hidden:
        clauses.append(f"not ({query.hidden})")
    condition = (" where " + " and ".join(clauses)) if clauses else ""
    params: dict[str, Any] = {**where, **(any_of or {}), "limit": per_page,
                              "offset": (page - 1) * per_page}
    with engine.connect() as conn:
        total = int(conn.execute(text(f"select count(*){query.source}{condition}"),
                                 params).scalar_one())
        rows = conn.execute(
            text(f"select t.*{query.columns}{query.source}{condition} order by t.id"
                 " limit :limit offset :offset"),
            params,
        ).all()
    return list(rows), total


def catalog_row(engine: Engine, query: CatalogQuery, key: str) -> Row[Any] | None:
    """The row a key names (the one ``query.first`` puts first: a plan change keeps a
    subscription's external_id on a new row), None when there is none or it is hidden."""
    shown = f" and not ({query.hidden})" if query.hidden else ""
    with engine.connect() as conn:
        return conn.execute(
            text(f"select t.*{query.columns}{query.source} where t.{query.key} = :k{shown}"
                 f" order by {query.first} limit 1"),
            {"k": key}).first()


def stored_document(engine: Engine, table: str, column: str,
                    key: Any) -> tuple[int, dict[str, Any]] | None:
    """A row's id and its stored Lago document (exact numbers), None when no row has the key."""
    rows = tables.metadata.tables[table]
    with engine.connect() as conn:
        row = conn.execute(
            select(rows.c.id, cast(rows.c.document, Text).label("document"))
            .where(rows.c[column] == key)
        ).first()
    return None if row is None else (int(row.id), loads(row.document))


def key_exists(engine: Engine, table: str, column: str, key: Any) -> bool:
    rows = tables.metadata.tables[table]
    with engine.connect() as conn:
        return conn.execute(select(rows.c.id).where(rows.c[column] == key)).first() is not None


def plan_deleted(engine: Engine, code: Any) -> bool:
    """Whether the plan with this code is soft-deleted (False for an unknown code: apply
    names that error itself)."""
    with engine.connect() as conn:
        deleted = conn.execute(text("select deleted_at is not null from plans where code = :c"),
                               {"c": code}).scalar()
    return bool(deleted)


def soft_delete_plan(engine: Engine, code: str) -> bool:
    """Mark the plan deleted, in one transaction with the check that no subscription on it
    is live; False (nothing changed) when one is."""
    with engine.begin() as conn:
        live = conn.execute(
            text("select count(*) from subscriptions s join plans p on p.id = s.plan_id"
                 " where p.code = :c and s.terminated_at is null"), {"c": code},
        ).scalar_one()
        if live:
            return False
        conn.execute(text("update plans set deleted_at = now(), updated_at = now()"
                          " where code = :c and deleted_at is null"), {"c": code})
    return True


def customer_relations(engine: Engine, external_id: str) -> tuple[list[str], list[str]]:
    """What a customer's delete ends (Lago's ``Customers::TerminateRelationsService``): its
    subscriptions in force or still to start (external ids) and its active applied coupons
    (lago ids)."""
    with engine.connect() as conn:
        subscriptions = conn.execute(text(
            "select s.external_id from subscriptions s join customers c on c.id = s.customer_id"
            " where c.external_id = :c and s.terminated_at is null"
            " and s.status in ('active', 'pending') order by s.id"), {"c": external_id},
        ).scalars().all()
        coupons = conn.execute(text(
            "select a.lago_id from applied_coupons a join customers c on c.id = a.customer_id"
            " where c.external_id = :c and a.status = 'active' order by a.id"),
            {"c": external_id}).scalars().all()
    return [str(s) for s in subscriptions], [str(c) for c in coupons]


def customer_deleted(engine: Engine, external_id: Any) -> bool:
    """Whether the customer with this external id is soft-deleted (False when unknown)."""
    if not isinstance(external_id, str):
        return False
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "select (document ->> 'deleted_at') is not null from customers"
            " where external_id = :c"), {"c": external_id}).scalar())


def soft_delete_customer(engine: Engine, external_id: str, at: str) -> None:
    """Mark the customer deleted (Lago's discard). The mark lives in the stored document, no
    column: the digest is left as it was, so applying the same document again changes
    nothing and the customer stays deleted. Its row stays for its invoices and ledger."""
    with engine.begin() as conn:
        conn.execute(text(
            "update customers set document = document"
            " || jsonb_build_object('deleted_at', cast(:at as text)), updated_at = now()"
            " where external_id = :c and (document ->> 'deleted_at') is null"),
            {"c": external_id, "at": at})


def soft_delete_add_on(engine: Engine, code: str) -> None:
    """Mark the add-on deleted (Lago's discard): no longer listed nor billed; the fees that
    named it keep it."""
    with engine.begin() as conn:
        conn.execute(text("update add_ons set deleted_at = now(), updated_at = now()"
                          " where code = :c and deleted_at is null"), {"c": code})


def subscription_owners(engine: Engine, external_ids: list[str]) -> dict[str, str]:
    """Subscription external_id -> its customer's external_id (unknown ones left out)."""
    if not external_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            text("select s.external_id, c.external_id from subscriptions s"
                 " join customers c on c.id = s.customer_id"
                 " where s.external_id = any(:subs)"),
            {"subs": sorted(external_ids)},
        ).all()
    return {sub: customer for sub, customer in rows}


def customer_id(engine: Engine, external_id: str) -> int | None:
    with engine.connect() as conn:
        found = conn.execute(text("select id from customers where external_id = :c"),
                             {"c": external_id}).scalar()
    return None if found is None else int(found)


def customers_by_external_id(engine: Engine, external_ids: list[str]) -> dict[str, Row[Any]]:
    """external_id -> the customer's id, timezone, created_at and updated_at."""
    with engine.connect() as conn:
        return {r.external_id: r for r in conn.execute(
            text("select id, external_id, timezone, created_at, updated_at from customers"
                 " where external_id = any(:ids)"), {"ids": sorted(external_ids)})}


def metric_codes(engine: Engine, ids: list[int]) -> dict[int, str]:
    """Billable metric row id -> its code (unknown ids left out): a plan's charge may name
    its metric by the ``lago_id`` the API answered, as Lago's clients do."""
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(text("select id, code from billable_metrics where id = any(:ids)"),
                            {"ids": sorted(set(ids))}).all()
    return {int(r.id): str(r.code) for r in rows}


def waiting_plan(engine: Engine, external_id: str) -> str | None:
    """The plan a subscription's waiting plan change (a downgrade at the period end) moves it
    to, None when none waits: a retried change finds it done."""
    with engine.connect() as conn:
        found = conn.execute(
            text("select p.code from subscriptions s join plans p on p.id = s.plan_id"
                 " where s.external_id = :x and s.previous_subscription_id is not null"
                 " and s.status <> 'canceled'"
                 " and coalesce(s.started_at, s.subscription_at) > now()"
                 " order by s.id desc limit 1"), {"x": external_id}).scalar()
    return None if found is None else str(found)
