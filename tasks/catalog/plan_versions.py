"""Plan and charge versions: written by a catalog apply, read by export and pricing.

The rule (docs/architecture.md §6): a plan is a sequence of versions, each with the document
as applied and the moment it took effect. An apply that changes a plan closes the open version
at the apply time (or an explicit time) and opens the next; an unchanged plan writes nothing.
A charge row is never rewritten either: a charge whose place and content are unchanged keeps
its row (and its id), a changed or removed one is closed, a changed or added one is opened.

Which version prices a period: Lago prices with the plan as it is. So every period not on a
finalized invoice (the open period, an ended one, a draft) is priced with the plan's current
version, and a change in the middle of a period reprices the whole period (no split by days);
a period on a finalized invoice keeps the version that invoice names, forever (a rerun of one of
its hours prices it with that version again). Versions therefore cannot be dated in the future
(they would price at once), nor before the version they replace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, cast, literal, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import Text

from tallyflow.models.catalog import PLAN, CatalogError, Plan, ValidDocument, digest, dumps, loads

# How far in the future an explicit effective time may be (clock skew between machines).
FUTURE_TOLERANCE: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class OpenVersion:
    plan_id: int
    version: int
    effective_from: datetime


def _jsonb(value: Any) -> Any:
    return cast(literal(dumps(value), Text), JSONB)


def open_versions(conn: Connection, plan_ids: Iterable[int]) -> dict[int, OpenVersion]:
    """The current version of each of these plans."""
    rows = conn.execute(
        text("select plan_id, version, effective_from from plan_versions"
             " where effective_to is null and plan_id = any(cast(:ids as bigint[]))"),
        {"ids": sorted(set(plan_ids))},
    )
    return {int(r.plan_id): OpenVersion(int(r.plan_id), int(r.version), r.effective_from)
            for r in rows}


def check_effective_at(
    conn: Connection,
    documents: Sequence[ValidDocument],
    stored: Mapping[tuple[str, ...], tuple[int, str]],
    at: datetime,
    now: datetime,
) -> list[CatalogError]:
    """Why ``at`` cannot start new versions of the changed plans among ``documents`` (none
    when it can). ``stored`` maps a plan key to its (id, digest) in the database."""
    changed = [d for d in documents
               if d.kind == PLAN and (d.key not in stored or stored[d.key][1] != d.digest)]
    if not changed:
        return []
    errors: list[CatalogError] = []
    if at > now + FUTURE_TOLERANCE:
        return [CatalogError(d.file, "plan", f"effective time {at.isoformat()} is in the future:"
                             " a version prices from the moment it is applied") for d in changed]
    current = open_versions(conn, [stored[d.key][0] for d in changed if d.key in stored])
    for d in changed:
        if d.key not in stored:
            continue
        version = current.get(stored[d.key][0])
        if version is not None and at <= version.effective_from:
            errors.append(CatalogError(
                d.file, "plan",
                f"effective time {at.isoformat()} is not after version {version.version} of plan"
                f" {d.key[0]!r} (effective from {version.effective_from.isoformat()}): a new"
                " version must start after the one it replaces"))
    return errors


def previous_document(conn: Connection, plan_id: int | None) -> dict[str, object] | None:
    """The stored document of a plan before this apply writes over it (None for a new one)."""
    if plan_id is None:
        return None
    raw = conn.execute(text("select document::text from plans where id = :id"),
                       {"id": plan_id}).scalar()
    return None if raw is None else dict(loads(raw))


def record_version(conn: Connection, plan_id: int, document: ValidDocument, at: datetime) -> int:
    """Close the plan's open version at ``at`` and open the next with this document; the
    first version of a new plan starts at ``at``. Returns the new version number."""
    closed = conn.execute(
        text("update plan_versions set effective_to = :at"
             " where plan_id = :plan and effective_to is null returning version"),
        {"at": at, "plan": plan_id},
    ).scalar()
    version = 1 if closed is None else int(closed) + 1
    conn.execute(
        text("insert into plan_versions (plan_id, version, effective_from, document, digest)"
             " values (:plan, :version, :at, cast(:document as jsonb), :digest)"),
        {"plan": plan_id, "version": version, "at": at, "document": dumps(document.document),
         "digest": document.digest},
    )
    return version


def write_charges(
    conn: Connection,
    plan_id: int,
    plan: Plan,
    document: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    metric_ids: Mapping[tuple[str, ...], int],
    at: datetime,
) -> None:
    """Keep the open charges whose position and content are unchanged, close the others at
    ``at`` and open rows for the new or changed ones (with their filters)."""
    new = list(document.get("charges") or [])
    old = list((previous or {}).get("charges") or [])
    same = {i for i in range(min(len(new), len(old))) if digest(new[i]) == digest(old[i])}
    conn.execute(
        text("update charges set effective_to = :at where plan_id = :plan"
             " and effective_to is null and not (position = any(cast(:keep as integer[])))"),
        {"at": at, "plan": plan_id, "keep": sorted(same)},
    )
    for position, charge in enumerate(plan.charges):
        if position in same:
            continue
        charge_id = conn.execute(
            text(
                """
                insert into charges (plan_id, position, billable_metric_id, charge_model,
                  properties, pay_in_advance, invoiceable, prorated, min_amount_cents,
                  invoice_display_name, pricing_group_keys, effective_from, regroup_paid_fees)
                values (:plan, :position, :metric, :model, cast(:properties as jsonb), :advance,
                  :invoiceable, :prorated, :minimum, :display, cast(:groups as text[]), :at,
                  :regroup)
                returning id
                """
            ),
            {
                "plan": plan_id, "position": position,
                "metric": metric_ids[(charge.metric_code or "",)],
                "model": charge.charge_model, "properties": dumps(charge.properties),
                "advance": charge.pay_in_advance, "invoiceable": charge.invoiceable,
                "prorated": charge.prorated, "minimum": charge.min_amount_cents,
                "regroup": charge.regroup_paid_fees,
                "display": charge.invoice_display_name,
                "groups": list(charge.pricing_group_keys), "at": at,
            },
        ).scalar_one()
        for index, item in enumerate(charge.filters):
            conn.execute(
                text("insert into charge_filters (charge_id, position, values, properties,"
                     " invoice_display_name) values (:charge, :position, cast(:values as jsonb),"
                     " cast(:properties as jsonb), :display)"),
                {"charge": charge_id, "position": index, "values": dumps(item.values),
                 "properties": dumps(item.properties), "display": item.invoice_display_name},
            )


def default_effective_at() -> datetime:
    """The apply time: a version takes effect when it is applied unless told otherwise."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def plan_documents_at(conn: Connection, at: datetime) -> list[dict[str, Any]]:
    """Each plan's document as it was at ``at`` (plans created later are not listed), by
    code: what ``catalog export --at`` shows."""
    rows = conn.execute(
        text(
            """
            select v.document::text as document
            from plan_versions v join plans p on p.id = v.plan_id
            where v.effective_from <= :at and (v.effective_to is null or v.effective_to > :at)
            order by p.code
            """
        ),
        {"at": at},
    )
    return [dict(loads(r.document)) for r in rows]


def plan_history(conn: Connection, code: str) -> list[dict[str, Any]]:
    """Every version of one plan, oldest first, with the charge ids each priced with."""
    rows = conn.execute(
        text(
            """
            select v.id, v.version, v.effective_from, v.effective_to, v.digest,
                   coalesce((select array_agg(c.id order by c.position) from charges c
                             where c.plan_id = v.plan_id
                               and c.effective_from <= v.effective_from
                               and (c.effective_to is null
                                    or c.effective_to > v.effective_from)), '{}') as charges
            from plan_versions v join plans p on p.id = v.plan_id
            where p.code = :code order by v.version
            """
        ),
        {"code": code},
    )
    return [{
        "lago_id": str(r.id), "version": r.version,
        "effective_from": r.effective_from.isoformat(),
        "effective_to": r.effective_to.isoformat() if r.effective_to else None,
        "digest": r.digest, "charge_ids": [int(c) for c in r.charges],
    } for r in rows]


def finalized_versions(conn: Connection, periods: Mapping[int, datetime]) -> dict[int, int]:
    """For the (subscription id -> period start) pairs on a finalized invoice, the plan version
    id that invoice priced with: a rerun prices those periods with it again."""
    if not periods:
        return {}
    rows = conn.execute(
        text(
            """
            select i.subscription_id, i.plan_version_id
            from unnest(cast(:subs as bigint[]), cast(:starts as timestamptz[])) as k(sid, ps)
            join invoice_subscriptions i on i.subscription_id = k.sid and i.period_start = k.ps
            join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
            where i.plan_version_id is not null
            """
        ),
        {"subs": list(periods), "starts": list(periods.values())},
    )
    return {int(r.subscription_id): int(r.plan_version_id) for r in rows}
