"""Fix and replay: objects read with other settings, and reading them again under the current
ones (issue 26 item 3; docs/ingest.md "Fix and replay").

**Settings.** Each ledger row records the fingerprint of the settings that read it
(``source_spec.settings``: the mapping's name, the mapping file's content when it is a file,
the mapping options, the format and the source options; ``Source.fingerprint``). A run counts
the ingested objects of its source whose fingerprint differs from its own ("N objects were
read with other settings"); nothing is read again until a person asks.

**Replay.** ``plan_replay`` registers, per object to replay, a new ledger row: the same source
and path, version ``<old version>~replay-<old id>`` (unique, so a rerun registers it once),
its ``source_spec`` naming the row it replaces (``replaces``) and who asked (``replay_by``).
That row is loaded by the ordinary loader (``tasks/ingest/load.py``), which calls ``reconcile``
inside the object's one transaction, before the merge:

1. per record (row number), what it gives now (``tf_stage``) is compared with what it gave
   before (the replaced row's events, not voided): the same events (keys and content by
   value) -> the record is *unchanged*: its new events are dropped, the old ones stand;
2. a changed record whose old events a void would refuse (a finalized invoice, billed in
   advance, archived) is *kept*: old events stand, new ones dropped, listed for a credit note;
3. every other changed record's old events are voided (``tasks/corrections/``, the same mark,
   trail and state rebuild as ``tallyflow events void``), its requests' ownership moves to
   the new row (or is released when the record no longer names the request), and its new
   events merge. A new event whose key this replay voided (voided keys stay taken: a resend
   of a voided key is a duplicate) is stored as ``<transaction_id>~replay-<new row id>``;
   a key voided before by a person stays voided (the new copy is a duplicate)
   (docs/architecture.md §3, invariant 2).

All of it commits with the object, or none of it. The wallets and snapshots follow through
``rerate_replay`` (the voids' re-rating, idempotent) and the next fold (the new row's events).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from tallyflow.models.lago.results import ReplayedObject
from tallyflow.tasks.corrections import (
    EventKey,
    Rerate,
    VoidResult,
    refusals_on,
    rerate_voids,
    void_on,
)
from tallyflow.tasks.ingest.readers import detect
from tallyflow.tasks.ingest.sources import SourceSpec

REPLAY_SUFFIX = "~replay-"
# What a ledger row registered without settings was read with (tasks/ingest/load.py).
_DEFAULT = json.dumps(SourceSpec(url="-").read_settings())

# Objects of a source read with settings other than ``fp`` (and not replaced since). A row
# from before fingerprints compares its recorded spec instead.
_OTHER = """
    from ingest_objects o
    where o.source = :source and o.status = 'ingested'
      and case when o.source_spec ? 'settings' then o.source_spec->>'settings' <> :fp
               -- registered without settings: the defaults (fsspec, lago, auto)
               when o.source_spec = '{}'::jsonb then cast(:default as jsonb)
                                                     <> cast(:spec as jsonb)
               else jsonb_build_object(
                      'kind', o.source_kind, 'mapping', o.source_spec->'mapping',
                      'mapping_options', o.source_spec->'mapping_options',
                      'format', o.source_spec->'format') <> cast(:spec as jsonb) end
      and not exists (select 1 from ingest_objects r
                      where r.source = o.source and r.source_spec->>'replaces' = o.id::text)
"""
_COUNT_OTHER = text("select count(*)" + _OTHER)
_SELECT = text(
    "select o.id, o.path, o.version, o.size, o.modified_at, o.format, o.compression"
    + _OTHER + """
      and (cast(:url as text) is null or o.path = :url)
      and (cast(:since as timestamptz) is null or o.discovered_at >= :since)
      and (cast(:until as timestamptz) is null or o.discovered_at < :until)
    order by o.path, o.version, o.id
    """
)
_REGISTER = text(
    """
    insert into ingest_objects (source, path, version, size, modified_at, format, compression,
                                source_kind, source_spec, claimed_by, claimed_at)
    values (:source, :path, :version, :size, :modified_at, :format, :compression, :kind,
            cast(:spec as jsonb), :run, now())
    on conflict (source, path, version) do update set claimed_by = excluded.claimed_by,
      claimed_at = excluded.claimed_at
    returning id, status
    """
)


_LEFT_TO_LOAD = text(
    """
    select id from ingest_objects
    where source = :source and status <> 'ingested' and source_spec ? 'replaces'
      and source_spec->>'settings' = :fp and (cast(:url as text) is null or path = :url)
    order by path, version, id
    """
)


_REPLAYED = text(
    """
    select id from ingest_objects
    where source = :source and status = 'ingested' and source_spec ? 'replaces'
      and source_spec->>'settings' = :fp and (cast(:url as text) is null or path = :url)
    order by id
    """
)


def replayed(engine: Engine, source_key: str, fingerprint: str, *,
             url: str | None = None) -> list[int]:
    """The replay rows loaded under these settings (of one object if asked): what
    ``rerate_replay`` re-rates, so a replay whose re-rating was cut short (a crash after the
    objects committed) is finished by the next ``reingest`` with the same settings."""
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(_REPLAYED, {
            "source": source_key, "fp": fingerprint, "url": url}).scalars()]


def base_version(version: str) -> str:
    """The object's own version of a ledger row (a replay row's carries ``~replay-<id>``)."""
    return version.split(REPLAY_SUFFIX, 1)[0]


def other_settings(engine: Engine, source_key: str, fingerprint: str,
                   settings: dict[str, Any]) -> int:
    """How many ingested objects of this source were read with other settings
    (``settings``: the run's ``SourceSpec.read_settings()``, for rows without a fingerprint)."""
    import orjson

    with engine.connect() as conn:
        return int(conn.execute(_COUNT_OTHER, {
            "source": source_key, "fp": fingerprint, "default": _DEFAULT,
            "spec": orjson.dumps(settings).decode()}).scalar_one())


def plan_replay(
    engine: Engine, source_key: str, kind: str, spec: dict[str, Any], fingerprint: str,
    fmt: str, *, actor: str, run_id: int | None = None, url: str | None = None,
    since: datetime | None = None, until: datetime | None = None,
    current: dict[str, str] | None = None,
) -> list[int]:
    """Register the replay rows of the chosen objects (the source's ingested objects read with
    other settings and not replaced yet: one ``url``, or first listed in [since, until)) and
    return the ids still to load, in load order. Idempotent: a rerun finds the rows it
    registered (still to load) or nothing (loaded: read with these settings now).

    ``current``: the source's listing now (url -> version). An object whose bytes are no
    longer the version that was read (rewritten: the new version is its own ledger row, read
    by the ordinary run; or gone) is not replayed: replay reads the object as it is now."""
    import orjson

    settings = {"kind": kind, **{k: spec.get(k) for k in ("mapping", "mapping_options",
                                                          "format")}}
    ids: list[int] = []
    with engine.begin() as conn:
        chosen = conn.execute(_SELECT, {
            "source": source_key, "url": url, "since": since, "until": until,
            "fp": fingerprint, "default": _DEFAULT,
            "spec": orjson.dumps(settings).decode()}).all()
        for old in chosen:
            if current is not None and current.get(old.path) != base_version(old.version):
                continue
            detected, compression = detect(old.path)
            row = conn.execute(_REGISTER, {
                "source": source_key, "path": old.path,
                "version": f"{old.version}{REPLAY_SUFFIX}{old.id}", "size": old.size,
                "modified_at": old.modified_at,
                "format": fmt if fmt != "auto" else (detected or old.format),
                "compression": compression if detected else old.compression, "kind": kind,
                "spec": orjson.dumps({**spec, "settings": fingerprint, "replaces": old.id,
                                      "replay_by": actor}).decode(),
                "run": run_id}).one()
            if row.status != "ingested":
                ids.append(int(row.id))
        # replay rows of these settings a crashed or failed replay left to load
        for row in conn.execute(_LEFT_TO_LOAD, {"source": source_key, "fp": fingerprint,
                                                "url": url}):
            if int(row.id) not in ids:
                ids.append(int(row.id))
                conn.execute(text("update ingest_objects set claimed_by = :run,"
                                  " claimed_at = now() where id = :id"),
                             {"run": run_id, "id": row.id})
        if run_id is not None:
            conn.execute(text("update ingest_runs set listed = true where id = :run"),
                         {"run": run_id})
    return ids


@dataclass
class Reconciled:
    """What a replay did to one object's records (``events_*`` count events)."""

    replaces: int
    records_unchanged: int = 0
    records_replaced: int = 0
    records_kept: int = 0  # changed, but their events stand (finalized invoice, ...)
    events_voided: int = 0
    events_renamed: int = 0  # stored under ``<id>~replay-<object>``: the key was voided
    kept: list[dict[str, Any]] = field(default_factory=list)  # for a credit note

    def as_dict(self) -> ReplayedObject:
        return {"replaces": self.replaces, "records_unchanged": self.records_unchanged,
                "records_replaced": self.records_replaced, "records_kept": self.records_kept,
                "events_voided": self.events_voided, "events_renamed": self.events_renamed,
                "kept": self.kept}


# The requests this object's records name now, per record (before anything is dropped).
_NOW_REQUESTS = text(
    """
    create temp table tf_replay_requests on commit drop as
    select properties->>'request_id' as request_id, row_number,
           min(external_subscription_id) as external_subscription_id,
           jsonb_object_agg(coalesce(properties->>'type', ''), properties->'tokens') as split
    from tf_stage where properties ? 'request_id' group by 1, 2
    """
)
# Events a record gives now exactly as it gave them before (key and content, numbers by
# value): the stored event stands, the new copy is dropped.
_MATCHED = text(
    """
    delete from tf_stage s using events e
    where e.object_id = any(cast(:chain as bigint[])) and e.voided_at is null
      and e.row_number = s.row_number
      and e.external_subscription_id = s.external_subscription_id
      and e.transaction_id = s.transaction_id and e.code = s.code
      and e."timestamp" = s.ts and e.properties = s.properties
      and e.precise_total_amount_cents is not distinct from s.precise
    returning s.row_number, e.id
    """
)
_OLD_LEFT = text(
    """
    select row_number, external_subscription_id, transaction_id from events
    where object_id = any(cast(:chain as bigint[])) and voided_at is null
      and id <> all(cast(:matched as bigint[]))
    order by row_number, sub_index
    """
)
_NEW_ROWS = text("select distinct row_number from tf_stage")
_DROP = text("delete from tf_stage where row_number = any(cast(:rows as bigint[]))")
# Requests the replaced records owned: to the new row when the record still names them ...
_TRANSFER = text(
    """
    update event_requests r
    set object_id = :new, mapping = :mapping, split = t.split,
        external_subscription_id = t.external_subscription_id
    from tf_replay_requests t
    where r.object_id = any(cast(:chain as bigint[])) and r.row_number = t.row_number
      and r.request_id = t.request_id
      and r.row_number = any(cast(:rows as bigint[]))
    """
)
# ... released when it does not: the voided record bills it no more, another record may.
_RELEASE = text(
    """
    delete from event_requests
    where object_id = any(cast(:chain as bigint[])) and row_number = any(cast(:rows as bigint[]))
    """
)
_RENAME = text(
    """
    update tf_stage s set transaction_id = s.transaction_id || :suffix
    from unnest(cast(:subs as text[]), cast(:txns as text[])) as k(sub, txn)
    where s.external_subscription_id = k.sub and s.transaction_id = k.txn
    """
)


def reconcile(conn: Connection, new_id: int, spec: dict[str, Any], mapping: str) -> Reconciled:
    """Inside the replay row's load transaction, after staging: see the module's steps.

    Event by event within a record: an event the record gives now exactly as before stands
    (not voided, not stored again); the record's other old events are voided and its other
    new events stored. A record is unchanged when all its events stand."""
    old = int(spec["replaces"])
    done = Reconciled(old)
    conn.execute(_NOW_REQUESTS)
    matched_rows: set[int] = set()
    matched_ids: list[int] = []
    chain = _chain(conn, old)
    for row in conn.execute(_MATCHED, {"chain": chain}):
        matched_rows.add(int(row.row_number))
        matched_ids.append(int(row.id))
    keys: dict[int, list[EventKey]] = defaultdict(list)
    for row in conn.execute(_OLD_LEFT, {"chain": chain, "matched": matched_ids}):
        keys[int(row.row_number)].append(
            EventKey(row.external_subscription_id, row.transaction_id))
    changed = sorted(set(keys) | {int(r) for r in conn.execute(_NEW_ROWS).scalars()})
    done.records_unchanged = len(matched_rows - set(changed))
    refused = refusals_on(conn, [k for ks in keys.values() for k in ks])
    kept = [r for r in changed if any(k in refused for k in keys.get(r, []))]
    for r in kept:
        done.kept.extend({"row": r, "external_subscription_id": k.external_subscription_id,
                          "transaction_id": k.transaction_id, "refused": refused[k]}
                         for k in keys[r] if k in refused)
    done.records_kept = len(kept)
    replaced = [r for r in changed if r not in set(kept)]
    done.records_replaced = len(replaced)
    if kept:
        conn.execute(_DROP, {"rows": kept})
    to_void = [k for r in replaced for k in keys.get(r, [])]
    if to_void:
        result = void_on(conn, list(dict.fromkeys(to_void)), VoidResult(
            str(spec.get("replay_by") or "tallyflow reingest"),
            replay_reason(new_id, old), datetime.now(UTC)))
        done.events_voided = len(result.voided)
        # only the keys this replay voided: a person's earlier void stands
        done.events_renamed = conn.execute(_RENAME, {
            "suffix": f"{REPLAY_SUFFIX}{new_id}",
            "subs": [k.external_subscription_id for k in to_void],
            "txns": [k.transaction_id for k in to_void]}).rowcount or 0
    conn.execute(_TRANSFER, {"chain": chain, "new": new_id, "mapping": mapping,
                             "rows": replaced})
    conn.execute(_RELEASE, {"chain": chain, "rows": replaced})
    return done


def _chain(conn: Connection, old: int) -> list[int]:
    """The replaced row and the rows it replaced in turn: what the object's records gave
    before is spread over them (an event that stood through a replay stays with its row)."""
    chain = [old]
    while True:
        earlier = conn.execute(text("select source_spec->>'replaces' from ingest_objects"
                                    " where id = :id"), {"id": chain[-1]}).scalar()
        if earlier is None or int(earlier) in chain:
            return chain
        chain.append(int(earlier))


def replay_reason(new_id: int, old_id: int) -> str:
    """The reason on a replay's voids (``event_voids.reason``), naming both ledger rows."""
    return f"replayed under other settings (ingest object {new_id} replaces {old_id})"


_VOIDED_BY_REPLAY = text(
    """
    select v.external_subscription_id, v."timestamp", v.code, v.voided_at, s.id as sub_id
    from event_voids v
    join ingest_objects o on o.id = any(cast(:ids as bigint[]))
    join subscriptions s on s.external_id = v.external_subscription_id
    where v.reason = 'replayed under other settings (ingest object ' || o.id::text
                     || ' replaces ' || (o.source_spec->>'replaces') || ')'
    """
)


def rerate_replay(engine: Engine, object_ids: list[int]) -> Rerate:
    """Re-rate the periods the replay's voids changed (snapshots, wallet corrections), as
    ``tallyflow events void`` does; idempotent, so a rerun finishes a crashed one."""
    touched: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    at = datetime.now(UTC)
    with engine.connect() as conn:
        for row in conn.execute(_VOIDED_BY_REPLAY, {"ids": object_ids}):
            touched[int(row.sub_id)].append((row.timestamp, row.code))
            at = row.voided_at
    result = VoidResult("tallyflow reingest", "replay", at, touched=dict(touched))
    if not touched:
        result.rerate = Rerate()
        return result.rerate
    return rerate_voids(engine, result)
