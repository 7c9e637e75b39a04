"""Voiding events: mark them voided with an audit trail, then re-rate what they had counted in.

Why it is exactly once and converges (docs/architecture.md §3, invariants 2, 4 and 5):

1. ``void_events``: one transaction holding the fold lock exclusively (no fold, rebuild or other
   void interleaves) locks the events, decides each key with the pure ``models/voids.py``, sets
   ``events.voided_at`` and writes one ``event_voids`` row per event (actor, time, reason), and
   recomputes the usage state of the subscriptions concerned from their events, voided ones
   left out (``rebuild_subscription``, as a termination does). Either all of it commits or none.
   The event stays stored under its key: a resend of that key is a duplicate, never billed.
2. ``rerate_voids``: the existing correction path, each step idempotent: a snapshot of every
   period the voids changed that the wallets follow (``usage_amounts``), then the customer's
   wallet deductions, which post the difference as one inbound correction (a delta against
   the ledger, never a deleted row). A void run again (every key ``already_voided``) redoes
   only this step, so a crash between the two is finished by a rerun; the hourly cycle would
   also pick up the current period (the rebuild moved the subscription's fold mark).

Refused, with the reason, and left untouched: events in a period on a finalized invoice or
already billed by a charge paid in advance (a credit note corrects those), archived events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.errors import UserError
from tallyflow.infra.failpoints import failpoint
from tallyflow.models.lago.results import EventHistoryEntry, EventStatus
from tallyflow.models.lago.summaries import ReratedPeriod, VoidedEvent, VoidRerate, VoidSummary
from tallyflow.models.voids import REFUSALS, EventFacts, VoidOutcome, void_decision
from tallyflow.tasks.folding import FOLD_LOCK, load_subscription_rows, rebuild_subscription
from tallyflow.tasks.usage import snapshot_subscriptions
from tallyflow.tasks.wallets import deduct_customers


class VoidError(UserError):
    """A void that cannot be asked for as given (no reason, unknown object, bad rows)."""


@dataclass(frozen=True, order=True)
class EventKey:
    """Lago's event key: what a person names and what dedup keeps taken."""

    external_subscription_id: str
    transaction_id: str


@dataclass
class KeyOutcome:
    """What the void did to one key; ``message`` says why it was refused."""

    key: EventKey
    outcome: VoidOutcome
    message: str | None = None
    timestamp: datetime | None = None
    voided_at: datetime | None = None

    def as_dict(self) -> VoidedEvent:
        return {
            "external_subscription_id": self.key.external_subscription_id,
            "transaction_id": self.key.transaction_id,
            "outcome": str(self.outcome),
            "message": self.message,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "voided_at": self.voided_at.isoformat() if self.voided_at else None,
        }


@dataclass
class Rerate:
    """What re-rating the voided periods moved (the wallet figures are this void's own)."""

    snapshots: int = 0
    periods: list[ReratedPeriod] = field(default_factory=list)
    corrections: int = 0
    credited_back_cents: Decimal = Decimal(0)
    deducted_cents: Decimal = Decimal(0)

    def as_dict(self) -> VoidRerate:
        return {"snapshots": self.snapshots, "periods": self.periods,
                "wallet_corrections": self.corrections,
                "credited_back_cents": format(self.credited_back_cents, "f"),
                "deducted_cents": format(self.deducted_cents, "f")}


@dataclass
class VoidResult:
    """Every key's outcome, in the order asked; ``rerate`` once the periods were re-rated."""

    actor: str
    reason: str
    at: datetime
    outcomes: list[KeyOutcome] = field(default_factory=list)
    # False when ``only_if_all`` held every key back because one was refused
    applied: bool = True
    events_refolded: int = 0
    # subscription row id -> the (time, metric code) of its voided (or already voided) events:
    # re-rating takes their periods, and the later ones when the metric is recurring (its
    # state carries forward)
    touched: dict[int, list[tuple[datetime, str]]] = field(default_factory=dict)
    rerate: Rerate | None = None

    @property
    def voided(self) -> list[KeyOutcome]:
        return [o for o in self.outcomes if o.outcome is VoidOutcome.VOIDED]

    @property
    def refused(self) -> list[KeyOutcome]:
        return [o for o in self.outcomes
                if o.outcome not in (VoidOutcome.VOIDED, VoidOutcome.ALREADY_VOIDED)]

    def as_dict(self) -> VoidSummary:
        counts: dict[str, int] = defaultdict(int)
        for o in self.outcomes:
            counts[str(o.outcome)] += 1
        return {"actor": self.actor, "reason": self.reason, "at": self.at.isoformat(),
                "applied": self.applied, "counts": dict(counts),
                "events": [o.as_dict() for o in self.outcomes],
                "events_refolded": self.events_refolded,
                "rerate": self.rerate.as_dict() if self.rerate else None}


# The facts ``void_decision`` needs, per stored event of the keys asked (locked when voiding).
_FACTS = """
    select e.external_subscription_id, e.transaction_id, e.id, e.code, e."timestamp",
           e.object_id, e.row_number, e.sub_index, e.ingested_at, e.voided_at,
           o.path as object,
           (select v.number from subscriptions s
              join invoice_subscriptions i on i.subscription_id = s.id
              join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
            where s.external_id = e.external_subscription_id
              and e."timestamp" between i.from_datetime and i.to_datetime
            order by v.id limit 1) as finalized_invoice,
           exists (select 1 from advance_fees f where f.event_id = e.id) as billed_in_advance
    from events e
    join unnest(cast(:subs as text[]), cast(:txns as text[])) as k(sub, txn)
      on e.external_subscription_id = k.sub and e.transaction_id = k.txn
    join ingest_objects o on o.id = e.object_id
"""
_FACTS_LOCKED = text(_FACTS + " order by e.external_subscription_id, e.transaction_id"
                     " for update of e")
_FACTS_READ = text(_FACTS)

_MARK = text(
    """
    update events e set voided_at = :at
    from unnest(cast(:subs as text[]), cast(:txns as text[])) as k(sub, txn)
    where e.external_subscription_id = k.sub and e.transaction_id = k.txn
      and e.voided_at is null
    """
)
_TRAIL = text(
    """
    insert into event_voids (external_subscription_id, transaction_id, event_id, code,
      "timestamp", object_id, row_number, actor, reason, voided_at)
    select e.external_subscription_id, e.transaction_id, e.id, e.code, e."timestamp",
           e.object_id, e.row_number, :actor, :reason, :at
    from events e
    join unnest(cast(:subs as text[]), cast(:txns as text[])) as k(sub, txn)
      on e.external_subscription_id = k.sub and e.transaction_id = k.txn
    on conflict (external_subscription_id, transaction_id) do nothing
    """
)


def _params(keys: Sequence[EventKey]) -> dict[str, list[str]]:
    return {"subs": [k.external_subscription_id for k in keys],
            "txns": [k.transaction_id for k in keys]}


def _facts(row: Any) -> EventFacts:
    return EventFacts(voided=row.voided_at is not None,
                      on_finalized_invoice=row.finalized_invoice is not None,
                      billed_in_advance=bool(row.billed_in_advance))


def void_events(
    engine: Engine, keys: Sequence[EventKey], actor: str, reason: str,
    at: datetime | None = None, *, only_if_all: bool = False,
) -> VoidResult:
    """Void these events in one transaction and rebuild the usage state they counted in.

    Idempotent: a key voided already is reported ``already_voided`` and keeps its first void
    (actor, time, reason); concurrent voids of the same keys wait on the fold lock and converge
    the same way. Refused keys are reported with their reason and change nothing; the others
    are voided all the same, unless ``only_if_all`` (the API: all or none, like Lago's event
    batches): then one refusal voids nothing (``applied`` False; the outcomes still say what
    each key would have been). Call ``rerate_voids`` next (``void_and_rerate`` does both).
    """
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise VoidError(f"the void's moment {at.isoformat()} has no timezone",
                        "give an offset, e.g. 2026-11-27T10:00:00Z")
    if not reason.strip():
        raise VoidError("a void needs a reason", 'say why, e.g. --reason "duplicate of T-41"')
    if not actor.strip():
        raise VoidError("a void needs an actor (who voids)", "the CLI uses the OS user")
    unique = list(dict.fromkeys(keys))
    result = VoidResult(actor, reason, at)
    if not unique:
        return result
    with engine.begin() as conn:
        return void_on(conn, unique, result, only_if_all=only_if_all)


def void_on(
    conn: Connection, unique: Sequence[EventKey], result: VoidResult, *,
    only_if_all: bool = False,
) -> VoidResult:
    """``void_events`` inside the caller's transaction (a replay voids and stores the
    record's new events in one transaction, tasks/ingest/replay.py). ``unique``: distinct keys."""
    at, actor, reason = result.at, result.actor, result.reason
    # Exclusive: no fold lands between the mark and the rebuilt state, and concurrent voids
    # of the same keys run one after the other (the second finds them voided).
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
    found = {EventKey(r.external_subscription_id, r.transaction_id): r
             for r in conn.execute(_FACTS_LOCKED, _params(unique))}
    missing = [k for k in unique if k not in found]
    archived = _archived(conn, missing) if missing else set()
    to_void: list[EventKey] = []
    touched: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for key in unique:
        row = found.get(key)
        outcome = void_decision(None if row is None else _facts(row), key in archived)
        result.outcomes.append(KeyOutcome(
            key, outcome, REFUSALS.get(outcome),
            timestamp=row.timestamp if row is not None else None,
            voided_at=(at if outcome is VoidOutcome.VOIDED
                       else row.voided_at if row is not None else None)))
        if row is not None and outcome in (VoidOutcome.VOIDED, VoidOutcome.ALREADY_VOIDED):
            touched[key.external_subscription_id].append((row.timestamp, row.code))
        if outcome is VoidOutcome.VOIDED:
            to_void.append(key)
    if only_if_all and result.refused:
        result.applied = False
        for held in result.outcomes:
            if held.outcome is VoidOutcome.VOIDED:
                held.voided_at = None
        return result
    if to_void:
        conn.execute(_MARK, {"at": at, **_params(to_void)})
        conn.execute(_TRAIL, {"at": at, "actor": actor, "reason": reason,
                              **_params(to_void)})
        failpoint("voids.after_mark", conn)
    for info in load_subscription_rows(conn, sorted(touched)):
        if to_void and any(k.external_subscription_id == info.external_id for k in to_void):
            result.events_refolded += rebuild_subscription(conn, info.id, info.external_id)
        result.touched[info.id] = touched[info.external_id]
    failpoint("voids.before_commit", conn)
    return result


# The periods the wallets follow that hold a voided event (or come after one of a recurring
# metric), not on a finalized invoice.
_AMOUNTS = text(
    """
    select a.subscription_id, a.external_subscription_id, a.period_start, a.period_end,
           a.as_of, s.customer_id
    from usage_amounts a join subscriptions s on s.id = a.subscription_id
    where a.subscription_id = :id
      and (exists (select 1 from unnest(cast(:times as timestamptz[])) t(at)
                   where t.at between a.period_start and a.period_end)
           or (a.period_end >= :since and exists (
                 select 1 from billable_metrics m
                 where m.recurring and m.code = any(cast(:codes as text[])))))
      and not exists (select 1 from invoice_subscriptions i
                      join invoices v on v.id = i.invoice_id and v.status in ('finalized', 'voided')
                      where i.subscription_id = a.subscription_id
                        and i.period_start = a.period_start)
    order by a.period_start
    """
)


def rerate_voids(engine: Engine, result: VoidResult) -> Rerate:
    """Re-rate every period the voids changed, then post the wallets' difference.

    Each period the wallets follow is snapshotted again: the period holding the void's moment
    as of that moment (a new snapshot), an earlier one as of the moment its amount was last
    taken (the rerun of that hour: ``usage_amounts`` only moves forward in time, so an
    earlier moment would not be followed). The deductions of the same moment then post the
    delta, one inbound correction per period and wallet. Both steps are idempotent.
    """
    rerate = Rerate()
    moments: dict[datetime, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
    with engine.connect() as conn:
        for sub_id, voided in sorted(result.touched.items()):
            times = [t for t, _ in voided]
            params = {"id": sub_id, "times": times, "since": min(times),
                      "codes": sorted({c for _, c in voided})}
            for row in conn.execute(_AMOUNTS, params):
                current = row.period_start <= result.at <= row.period_end
                moment = result.at if current and result.at >= row.as_of else row.as_of
                subs, customers = moments[moment]
                subs.add(int(row.subscription_id))
                customers.add(int(row.customer_id))
                rerate.periods.append({
                    "external_subscription_id": row.external_subscription_id,
                    "period_start": row.period_start.isoformat(),
                    "as_of": moment.isoformat()})
    for moment, (subs, customers) in sorted(moments.items()):
        batch = snapshot_subscriptions(engine, sorted(subs), moment)
        rerate.snapshots += batch.snapshots
        failpoint("voids.after_rerate_snapshot")
        moved = deduct_customers(engine, sorted(customers), moment)
        rerate.corrections += moved.corrections
        rerate.credited_back_cents += moved.amount_cents_corrected
        rerate.deducted_cents += moved.amount_cents_deducted
    result.rerate = rerate
    return rerate


def void_and_rerate(
    engine: Engine, keys: Sequence[EventKey], actor: str, reason: str,
    at: datetime | None = None, *, only_if_all: bool = False,
) -> VoidResult:
    """``void_events`` then ``rerate_voids``: what ``tallyflow events void`` and the API do."""
    result = void_events(engine, keys, actor, reason, at, only_if_all=only_if_all)
    if result.touched:
        rerate_voids(engine, result)
    return result


# --------------------------------------------------------------------------------------------
# Which keys: an object's rows; where one event stands
# --------------------------------------------------------------------------------------------

_OBJECT_KEYS = text(
    """
    select e.external_subscription_id, e.transaction_id
    from events e join ingest_objects o on o.id = e.object_id
    where o.path = :url
      and (cast(:lows as bigint[]) is null or exists (
             select 1 from unnest(cast(:lows as bigint[]), cast(:highs as bigint[])) r(lo, hi)
             where e.row_number between r.lo and r.hi))
    order by e.object_id, e.row_number, e.sub_index
    """
)


def keys_of_object(
    engine: Engine, url: str, rows: Sequence[tuple[int, int]] | None = None
) -> list[EventKey]:
    """The keys of the events stored from an object's rows (every version of the object). A
    row whose event was a duplicate of one stored from another object gives no key here: that
    event belongs to the other object's row (void it by its key)."""
    with engine.connect() as conn:
        known = conn.execute(text("select 1 from ingest_objects where path = :u limit 1"),
                             {"u": url}).first()
        if known is None:
            raise VoidError(f"no ingested object {url!r}",
                            "give the object URL as `tallyflow ingest` lists it")
        return [EventKey(r.external_subscription_id, r.transaction_id)
                for r in conn.execute(_OBJECT_KEYS, {
                    "url": url,
                    "lows": [r[0] for r in rows] if rows else None,
                    "highs": [r[1] for r in rows] if rows else None})]


def _archived(conn: Connection, keys: Sequence[EventKey]) -> set[EventKey]:
    """Which of these keys an archive file holds (only asked for keys not in the table: a
    rare path, so reading the archive's key columns is fine). A file that cannot be read is
    skipped: the key is then reported ``not_found``, never voided."""
    urls = [r.url if r.moved else r.temporary_url for r in conn.execute(
        text("select url, temporary_url, moved from event_archives where rows > 0"))]
    if not urls:
        return set()
    import fsspec
    import pyarrow.parquet as pq

    wanted = {(k.external_subscription_id, k.transaction_id): k for k in keys}
    held: set[EventKey] = set()
    for url in urls:
        try:
            fs, path = fsspec.core.url_to_fs(url)
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=["external_subscription_id",
                                                       "transaction_id"])
        except (OSError, ValueError):
            continue
        for sub, txn in zip(table.column(0).to_pylist(), table.column(1).to_pylist(),
                            strict=True):
            if (sub, txn) in wanted:
                held.add(wanted[(sub, txn)])
    return held


def event_status(engine: Engine, key: EventKey) -> EventStatus:
    """Where one event stands and its history (``tallyflow events show``, the API's GET).

    Status, first match: ``voided``, ``on_finalized_invoice``, ``billed_in_advance``,
    ``accepted``; ``archived`` for a key an archive file holds. ``VoidError`` when no event
    has the key."""
    with engine.connect() as conn:
        row = conn.execute(_FACTS_READ, _params([key])).first()
        if row is None:
            if _archived(conn, [key]):
                return {"external_subscription_id": key.external_subscription_id,
                        "transaction_id": key.transaction_id, "status": "archived",
                        "history": []}
            raise VoidError(
                f"no event {key.external_subscription_id}/{key.transaction_id}",
                "check the subscription and transaction_id; `tallyflow rejects` lists rows"
                " that were refused")
        trail = conn.execute(
            text("select actor, reason, voided_at from event_voids"
                 " where external_subscription_id = :s and transaction_id = :t order by id"),
            {"s": key.external_subscription_id, "t": key.transaction_id}).all()
    if row.voided_at is not None:
        status = "voided"
    elif row.finalized_invoice is not None:
        status = "on_finalized_invoice"
    elif row.billed_in_advance:
        status = "billed_in_advance"
    else:
        status = "accepted"
    history: list[EventHistoryEntry] = [
        {"at": row.ingested_at.isoformat(), "event": "ingested", "object": row.object,
         "row": int(row.row_number)}]
    history += [{"at": t.voided_at.isoformat(), "event": "voided", "actor": t.actor,
                 "reason": t.reason} for t in trail]
    return {
        "external_subscription_id": key.external_subscription_id,
        "transaction_id": key.transaction_id,
        "status": status,
        "code": row.code,
        "timestamp": row.timestamp.isoformat(),
        "object": row.object,
        "row": int(row.row_number),
        "sub_index": int(row.sub_index),
        "ingested_at": row.ingested_at.isoformat(),
        "invoice": row.finalized_invoice,
        "voided_at": row.voided_at.isoformat() if row.voided_at else None,
        "history": history,
    }


def refusals_on(conn: Connection, keys: Sequence[EventKey]) -> dict[EventKey, str]:
    """The keys a void would refuse, each with its refusal (and the finalized invoice, which a
    credit note corrects), inside the caller's transaction under the fold lock: what a replay
    leaves standing (tasks/ingest/replay.py)."""
    if not keys:
        return {}
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK})
    refused: dict[EventKey, str] = {}
    for row in conn.execute(_FACTS_LOCKED, _params(list(dict.fromkeys(keys)))):
        outcome = void_decision(_facts(row))
        if outcome not in (VoidOutcome.VOIDED, VoidOutcome.ALREADY_VOIDED):
            invoice = f" {row.finalized_invoice}" if row.finalized_invoice else ""
            refused[EventKey(row.external_subscription_id, row.transaction_id)] = (
                f"{outcome}{invoice}")
    return refused
