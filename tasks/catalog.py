"""Catalog files in, Postgres catalog tables out (and back): load, apply, export.

An apply is all or nothing. Everything is validated first, against the files *and* what the
database already holds, inside the transaction that then writes; any error means nothing is
written and every error is returned. A transaction-level advisory lock serialises concurrent
applies, so the state validated is the state written over.

Idempotence comes from the ``digest`` column: each stored document is the normalised Lago body
and its digest is the sha256 of its canonical JSON. A document whose digest matches the stored
one is not touched at all (``updated_at`` does not move), so re-applying the same files is a
no-op and ``export -> apply`` reports everything unchanged.

Plain functions, no Prefect: the catalog is applied by the CLI (and by tests), and a partially
retried apply would be wrong anyway; the transaction is the unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import Text

from tallyflow.models import tables as t
from tallyflow.models.catalog import (
    BILLABLE_METRIC,
    BILLING_ENTITY,
    CUSTOMER,
    KINDS,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    BillableMetric,
    BillingEntity,
    Catalog,
    CatalogError,
    CatalogValidationError,
    Customer,
    Plan,
    Subscription,
    Tax,
    ValidDocument,
    Wallet,
    dumps,
    loads,
    parse_body,
    validate_documents,
)
from tallyflow.tasks import plan_versions

CATALOG_SUFFIXES = (".json", ".yaml", ".yml")
_APPLY_LOCK = 7_305_002  # constant advisory-lock key: one catalog apply at a time per database
_KIND_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
# The file name per kind when exporting to a folder.
EXPORT_FILES = {
    TAX: "taxes.json",
    BILLING_ENTITY: "billing_entities.json",
    BILLABLE_METRIC: "billable_metrics.json",
    PLAN: "plans.json",
    CUSTOMER: "customers.json",
    SUBSCRIPTION: "subscriptions.json",
    WALLET: "wallets.json",
}


class LoadedDocument(NamedTuple):
    """One envelope read from a file; ``position`` is its place among the file's documents."""

    file: str
    position: int
    envelope: Any


@dataclass
class ApplyResult:
    """What an apply did, per kind, or why it did nothing (``errors``)."""

    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    errors: list[CatalogError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kinds": {
                kind: {
                    "created": self.created[kind],
                    "updated": self.updated[kind],
                    "unchanged": self.unchanged[kind],
                }
                for kind in KINDS
            },
            "errors": [error.to_dict() for error in self.errors],
        }


# --------------------------------------------------------------------------------------------
# Loading files
# --------------------------------------------------------------------------------------------


class _CatalogYamlLoader(yaml.SafeLoader):
    """SafeLoader that never produces floats or datetimes.

    Floats become ``Decimal`` (built from the text, so no digit is lost); timestamps stay text
    so the models see the same value whether the file is YAML or JSON.
    """


_CatalogYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a finite number", node.start_mark
        )
    return number


_CatalogYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def _read_file(path: Path) -> list[Any]:
    """The envelopes of one file: a JSON envelope or list, or YAML (one, a list, multi-doc)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from exc
        return data if isinstance(data, list) else [data]
    try:
        parts = list(yaml.load_all(text, Loader=_CatalogYamlLoader))
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}".replace("\n", " ")) from exc
    documents: list[Any] = []
    for part in parts:
        if part is None:  # an empty document, e.g. after a trailing '---'
            continue
        documents.extend(part if isinstance(part, list) else [part])
    return documents


def _catalog_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[CatalogError]]:
    files: list[Path] = []
    errors: list[CatalogError] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in CATALOG_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            if path.suffix.lower() in CATALOG_SUFFIXES:
                files.append(path)
            else:
                errors.append(
                    CatalogError(
                        str(path), ".", "not a catalog file (expected .json, .yaml or .yml)"
                    )
                )
        else:
            errors.append(CatalogError(str(path), ".", "no such file or folder"))
    unique = list(dict.fromkeys(files))
    return unique, errors


def _kind_rank(envelope: Any) -> int:
    if isinstance(envelope, dict) and len(envelope) == 1:
        return _KIND_RANK.get(next(iter(envelope)), len(KINDS))
    return len(KINDS)


def _load(paths: Iterable[str | Path]) -> tuple[list[LoadedDocument], list[CatalogError]]:
    files, errors = _catalog_files(paths)
    documents: list[LoadedDocument] = []
    for path in files:
        try:
            envelopes = _read_file(path)
        except (OSError, ValueError) as exc:
            errors.append(CatalogError(str(path), ".", str(exc)))
            continue
        documents.extend(LoadedDocument(str(path), i, e) for i, e in enumerate(envelopes))
    file_order = {str(path): position for position, path in enumerate(files)}
    documents.sort(key=lambda d: (_kind_rank(d.envelope), file_order[d.file], d.position))
    return documents, errors


def load_documents(paths: Iterable[str | Path]) -> list[LoadedDocument]:
    """Read files and folders (recursively) of catalog documents, ordered for applying.

    Order: billable metrics, plans, customers, subscriptions, wallets (each kind refers only to
    earlier kinds), then by file and position. Raises ``CatalogValidationError`` listing every
    file that cannot be read; unknown envelopes are left for validation to report.
    """
    documents, errors = _load(paths)
    if errors:
        raise CatalogValidationError(errors)
    return documents


# --------------------------------------------------------------------------------------------
# Reading what the database holds
# --------------------------------------------------------------------------------------------


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
    table, key_column = _KEYED_TABLES[kind]
    query = select(
        table.c[key_column], table.c.id, table.c.digest, cast(table.c.document, Text)
    ).order_by(table.c[key_column])
    if kind == SUBSCRIPTION:
        # The current row of each external id: a plan change's old rows are history.
        later = t.subscriptions.alias("later")
        query = query.where(~exists().where(later.c.previous_subscription_id == table.c.id))
    return [((r[0],), r[1], r[2], r[3]) for r in conn.execute(query)]


_KEYED_TABLES: dict[str, tuple[Table, str]] = {
    TAX: (t.taxes, "code"),
    BILLING_ENTITY: (t.billing_entities, "code"),
    BILLABLE_METRIC: (t.billable_metrics, "code"),
    PLAN: (t.plans, "code"),
    CUSTOMER: (t.customers, "external_id"),
    SUBSCRIPTION: (t.subscriptions, "external_id"),
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


# --------------------------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------------------------


def apply_catalog(
    engine: Engine,
    paths: Iterable[str | Path],
    *,
    now: datetime | None = None,
    effective_at: datetime | None = None,
) -> ApplyResult:
    """Validate and upsert catalog files in one transaction; see the module docstring.

    ``now`` is the start given to new subscriptions that do not say ``subscription_at``
    (default: the current time). ``effective_at`` is when the plan versions this apply creates
    take effect (default: the current time; never in the future, always after the version it
    replaces: ``tasks.plan_versions``).
    """
    documents, load_errors = _load(paths)
    return apply_documents(engine, documents, now=now, effective_at=effective_at,
                           load_errors=load_errors)


def apply_documents(
    engine: Engine, documents: Sequence[LoadedDocument], *, now: datetime | None = None,
    effective_at: datetime | None = None, load_errors: Sequence[CatalogError] = (),
) -> ApplyResult:
    """Validate and upsert envelopes already read (files, or the API's request bodies): the
    same rules and the same all-or-nothing transaction as ``apply_catalog``."""
    documents = sorted(documents, key=lambda d: _kind_rank(d.envelope))
    at = effective_at or plan_versions.default_effective_at()
    with engine.begin() as conn:
        conn.execute(sql_text("select pg_advisory_xact_lock(:key)"), {"key": _APPLY_LOCK})
        state = _read_state(conn)
        validation = validate_documents(documents, state.catalog, now=now)
        errors = [*load_errors, *validation.errors]
        if not errors:
            stored_plans = {key: (row.id, row.digest) for key, row in state.rows[PLAN].items()}
            errors = plan_versions.check_effective_at(
                conn, validation.documents, stored_plans, at, plan_versions.default_effective_at())
        if errors:
            conn.rollback()
            return ApplyResult(errors=errors)
        return _write_all(conn, validation.documents, state, at, now)


def _write_all(
    conn: Connection, documents: Sequence[ValidDocument], state: _State, at: datetime,
    now: datetime | None = None,
) -> ApplyResult:
    result = ApplyResult()
    ids = {kind: {key: row.id for key, row in rows.items()} for kind, rows in state.rows.items()}
    for document in sorted(documents, key=lambda d: _KIND_RANK[d.kind]):
        stored = state.rows[document.kind].get(document.key)
        if stored is not None and stored.digest == document.digest:
            result.unchanged[document.kind] += 1
            continue
        writer: Callable[[Connection, ValidDocument, int | None, dict[str, dict[Any, int]]],
                         int]
        if document.kind == PLAN:
            writer = partial(_write_plan, at=at)
        elif document.kind == SUBSCRIPTION:  # plan changes take effect at the apply's moment
            writer = partial(_write_subscription, now=now)
        else:
            writer = _WRITERS[document.kind]
        row_id = writer(conn, document, stored.id if stored else None, ids)
        ids[document.kind][document.key] = row_id
        counts = result.updated if stored else result.created
        counts[document.kind] += 1
    return result


def _jsonb(value: Any) -> Any:
    """A JSONB bind parameter written by the catalog's Decimal-safe JSON writer."""
    return cast(literal(dumps(value), Text), JSONB)


def _upsert(
    conn: Connection,
    table: Table,
    row_id: int | None,
    values: dict[str, Any],
    document: ValidDocument,
) -> int:
    values = {**values, "document": _jsonb(document.document), "digest": document.digest}
    if row_id is None:
        return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())
    conn.execute(table.update().where(table.c.id == row_id).values(**values, updated_at=func.now()))
    return row_id


Ids = dict[str, dict[tuple[str, ...], int]]


def _write_tax(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    tax: Tax = doc.model
    return _upsert(
        conn,
        t.taxes,
        row_id,
        {
            "code": tax.code,
            "name": tax.name,
            "rate": tax.rate,
            "description": tax.description,
            "applied_to_organization": tax.applied_to_organization,
        },
        doc,
    )


def _write_billing_entity(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids
) -> int:
    entity: BillingEntity = doc.model
    return _upsert(conn, t.billing_entities, row_id,
                   {"code": entity.code, "name": entity.name}, doc)


def _write_metric(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    metric: BillableMetric = doc.model
    row_id = _upsert(
        conn,
        t.billable_metrics,
        row_id,
        {
            "code": metric.code,
            "name": metric.name,
            "description": metric.description,
            "aggregation_type": metric.aggregation_type,
            "field_name": metric.field_name,
            "recurring": metric.recurring,
            "rounding_function": metric.rounding_function,
            "rounding_precision": metric.rounding_precision,
            "weighted_interval": metric.weighted_interval,
        },
        doc,
    )
    conn.execute(
        delete(t.billable_metric_filters).where(
            t.billable_metric_filters.c.billable_metric_id == row_id
        )
    )
    if metric.filters:
        conn.execute(
            insert(t.billable_metric_filters),
            [
                {"billable_metric_id": row_id, "key": f.key, "values": list(f.values)}
                for f in metric.filters
            ],
        )
    return row_id


def _write_plan(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids,
    at: datetime | None = None,
) -> int:
    """A changed plan gets a new version (``tasks.plan_versions``): the plans row takes the new
    values, unchanged charges keep their rows and ids, changed ones are closed and reopened."""
    plan: Plan = doc.model
    at = at or plan_versions.default_effective_at()
    previous = plan_versions.previous_document(conn, row_id)
    row_id = _upsert(
        conn,
        t.plans,
        row_id,
        {
            "code": plan.code,
            "name": plan.name,
            "description": plan.description,
            "interval": plan.interval,
            "amount_cents": plan.amount_cents,
            "amount_currency": plan.amount_currency,
            "pay_in_advance": plan.pay_in_advance,
            "trial_period": plan.trial_period,
        },
        doc,
    )
    plan_versions.record_version(conn, row_id, doc, at)
    plan_versions.write_charges(conn, row_id, plan, doc.document, previous,
                                ids[BILLABLE_METRIC], at)
    return row_id


def _write_customer(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    customer: Customer = doc.model
    return _upsert(
        conn,
        t.customers,
        row_id,
        {
            "external_id": customer.external_id,
            "name": customer.name,
            "email": customer.email,
            "currency": customer.currency,
            "timezone": customer.timezone,
        },
        doc,
    )


def _write_subscription(
    conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids, now: datetime | None = None
) -> int:
    now = now or datetime.now(UTC)
    subscription: Subscription = doc.model
    before = None if row_id is None else conn.execute(
        select(t.subscriptions.c.subscription_at, t.subscriptions.c.ending_at,
               t.subscriptions.c.plan_id, t.subscriptions.c.started_at)
        .where(t.subscriptions.c.id == row_id)).one()
    plan_id = ids[PLAN][(subscription.plan_code,)]
    if row_id is not None and before is not None and before.plan_id != plan_id and (
            (before.started_at or before.subscription_at) <= now):
        # Another plan for a started subscription: Lago's upgrade or downgrade, effective from
        # this apply (recorded, so re-applying the file changes nothing).
        from tallyflow.tasks.lifecycle import start_plan_change

        new_id, _, _ = start_plan_change(conn, row_id, subscription.plan_code, now, now,
                                         dict(doc.document))
        return new_id
    row_id = _upsert(
        conn,
        t.subscriptions,
        row_id,
        {
            "external_id": subscription.external_id,
            "customer_id": ids[CUSTOMER][(subscription.external_customer_id,)],
            "plan_id": plan_id,
            "name": subscription.name,
            "billing_time": subscription.billing_time,
            "subscription_at": subscription.subscription_at,
            "ending_at": subscription.ending_at,
            "on_termination_invoice": subscription.on_termination_invoice or "generate",
        },
        doc,
    )
    if before is not None and tuple(before) != (subscription.subscription_at,
                                                subscription.ending_at):
        # New dates: usage state and wallet amounts follow them (models/lifecycle.py).
        from tallyflow.tasks.lifecycle import dates_changed

        dates_changed(conn, row_id, subscription.external_id, now)
    return row_id


def _write_wallet(conn: Connection, doc: ValidDocument, row_id: int | None, ids: Ids) -> int:
    """Catalog fields only; balances and the credit ledger belong to the wallet flow."""
    wallet: Wallet = doc.model
    row_id = _upsert(
        conn,
        t.wallets,
        row_id,
        {
            "customer_id": ids[CUSTOMER][(wallet.external_customer_id,)],
            "code": doc.key[1],
            "name": wallet.name,
            "currency": wallet.currency,
            "rate_amount": wallet.rate_amount,
            "paid_credits": wallet.paid_credits,
            "granted_credits": wallet.granted_credits,
            "priority": wallet.priority,
            "expiration_at": wallet.expiration_at,
        },
        doc,
    )
    conn.execute(
        delete(t.wallet_recurring_rules).where(t.wallet_recurring_rules.c.wallet_id == row_id)
    )
    if wallet.recurring_transaction_rules:
        conn.execute(
            insert(t.wallet_recurring_rules),
            [
                {
                    "wallet_id": row_id,
                    "position": position,
                    "trigger": rule.trigger,
                    "interval": rule.interval,
                    "method": rule.method,
                    "paid_credits": rule.paid_credits,
                    "granted_credits": rule.granted_credits,
                    "threshold_credits": rule.threshold_credits,
                    "target_ongoing_balance": rule.target_ongoing_balance,
                    "started_at": rule.started_at,
                    "expiration_at": rule.expiration_at,
                }
                for position, rule in enumerate(wallet.recurring_transaction_rules)
            ],
        )
    return row_id


_WRITERS = {
    TAX: _write_tax,
    BILLING_ENTITY: _write_billing_entity,
    BILLABLE_METRIC: _write_metric,
    PLAN: _write_plan,
    CUSTOMER: _write_customer,
    SUBSCRIPTION: _write_subscription,
    WALLET: _write_wallet,
}


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_catalog(engine: Engine, at: datetime | None = None) -> list[dict[str, Any]]:
    """The stored catalog as Lago envelopes, in apply order; applying them changes nothing.

    ``at``: plans as they were at that moment (their version in force then; plans created
    later left out). Only plans are versioned: the other kinds are shown as they are now."""
    envelopes: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for kind in KINDS:
            if kind == PLAN and at is not None:
                envelopes.extend({kind: body} for body in plan_versions.plan_documents_at(conn, at))
                continue
            envelopes.extend(
                {kind: loads(document)} for _, _, _, document in _keyed_documents(conn, kind)
            )
    return envelopes


def write_catalog(envelopes: Sequence[dict[str, Any]], target: str | Path) -> list[Path]:
    """Write an export: to a ``.json``/``.yaml`` file as one list, or to a folder as one JSON
    file per kind (``billable_metrics.json``, ``plans.json``, ...). Returns the files written."""
    target = Path(target)
    if target.suffix.lower() in CATALOG_SUFFIXES:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render(list(envelopes), target.suffix.lower()), encoding="utf-8")
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = target / EXPORT_FILES[kind]
        path.write_text(_render([e for e in envelopes if kind in e], ".json"), encoding="utf-8")
        written.append(path)
    return written


def _render(envelopes: list[dict[str, Any]], suffix: str) -> str:
    if suffix == ".json":
        return dumps(envelopes, indent=2) + "\n"
    return yaml.dump(envelopes, Dumper=_CatalogYamlDumper, sort_keys=True, allow_unicode=True)


class _CatalogYamlDumper(yaml.SafeDumper):
    """Writes ``Decimal`` as a YAML number from its exact text."""


_CatalogYamlDumper.add_representer(
    Decimal,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float", format(value, "f")),
)
