"""One LLM request billed once, whatever mapping it arrives through (issue 26 item 2).

A mapping that knows the provider's request names it on each event of the record
(``properties.request_id``: for a gateway that logs the provider's id, that id). The first
record, in the run's load order, that names a request owns it: ``event_requests`` keeps the
request, the record's subscriber, mapping and split (type -> tokens), in the transaction that
stores its events. A later record naming the same request is withheld, never billed:

- the same mapping and split (the same record sent again): its events go on to the ordinary
  per-key deduplication (duplicates, or conflicting duplicates when another field changed);
- another mapping with the same subscriber and split: a duplicate (withheld, counted);
- another split or subscriber: a conflict, kept as rejected rows (``request_conflict``) that
  name the record that billed the request.

So the same request through ``litellm-spend`` (input including cached tokens) and
``openai-chat`` (input minus cached) bills once, as the first source read it
(docs/architecture.md §3, invariant 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from tallyflow.models.events import Rejection
from tallyflow.tasks.ingest.staging import RejectedRow, staged_event_json

REQUEST_CONFLICT = "request_conflict"

# This object's records that name a request: the first row per request is its candidate owner.
_STAGED_REQUESTS = text(
    """
    create temp table tf_requests on commit drop as
    select properties->>'request_id' as request_id, row_number,
           min(external_subscription_id) as external_subscription_id,
           jsonb_object_agg(coalesce(properties->>'type', ''), properties->'tokens') as split
    from tf_stage
    where properties ? 'request_id'
    group by 1, 2
    """
)
_CLAIM = text(
    """
    insert into event_requests (request_id, external_subscription_id, mapping, split,
                                object_id, row_number)
    select distinct on (request_id) request_id, external_subscription_id, :mapping, split,
           :object_id, row_number
    from tf_requests
    order by request_id, row_number
    on conflict (request_id) do nothing
    """
)
# Records of a request another record owns, unless they are that record or the same mapping
# with the same split and subscriber (left to the per-key deduplication).
_WITHHELD = text(
    """
    select t.request_id, t.row_number, r.mapping, r.row_number as kept_row,
           o.path as kept_path, r.split::text as kept_split, t.split::text as split,
           r.external_subscription_id as kept_subscriber,
           t.external_subscription_id as subscriber,
           (r.split = t.split and r.external_subscription_id = t.external_subscription_id)
             as same
    from tf_requests t
    join event_requests r on r.request_id = t.request_id
    join ingest_objects o on o.id = r.object_id
    where not (r.object_id = :object_id and r.row_number = t.row_number)
      and (r.mapping <> :mapping or r.split <> t.split
           or r.external_subscription_id <> t.external_subscription_id)
    """
)
_TAKE_OUT = text(
    """
    delete from tf_stage s
    using (select unnest(cast(:ids as text[])) as request_id,
                  unnest(cast(:rows as bigint[])) as row_number) w
    where s.properties->>'request_id' = w.request_id and s.row_number = w.row_number
    returning s.row_number, s.sub_index, s.transaction_id, s.external_subscription_id,
              s.code, s.ts, s.ts_given, s.properties::text as properties, s.precise,
              s.properties->>'request_id' as request_id
    """
)


@dataclass
class Withheld:
    """What the request rule kept out of this object's merge."""

    events: int = 0  # staged events taken out (not billed)
    duplicates: int = 0  # of those: the same request, split and subscriber via another mapping
    conflicts: list[RejectedRow] = field(default_factory=list)  # one per event


def withhold_repeated_requests(conn: Connection, object_id: int, mapping: str) -> Withheld:
    """Claim this object's requests and take out of ``tf_stage`` the records of requests
    another record owns. Runs in the object's transaction, after the objects before it in the
    run have committed (the first one read owns a request)."""
    withheld = Withheld()
    conn.execute(_STAGED_REQUESTS)
    conn.execute(_CLAIM, {"mapping": mapping, "object_id": object_id})
    found = conn.execute(_WITHHELD, {"mapping": mapping, "object_id": object_id}).all()
    if not found:
        return withheld
    why = {(r.request_id, r.row_number): r for r in found}
    taken = conn.execute(_TAKE_OUT, {"ids": [r.request_id for r in found],
                                     "rows": [r.row_number for r in found]}).all()
    withheld.events = len(taken)
    for row in taken:
        owner = why[(row.request_id, row.row_number)]
        if owner.same:
            withheld.duplicates += 1
            continue
        withheld.conflicts.append(
            (row.row_number, _conflict(owner), staged_event_json(row), row.sub_index))
    withheld.conflicts.sort(key=lambda c: (c[0], c[3] if len(c) > 3 else 0))
    return withheld


def _conflict(o: Any) -> Rejection:
    """``o``: a row of ``_WITHHELD``."""
    differs = []
    if o.kept_subscriber != o.subscriber:
        differs.append(f"subscriber {o.kept_subscriber!r}")
    if o.kept_split != o.split:
        differs.append(f"split {o.kept_split}")
    return Rejection(
        REQUEST_CONFLICT,
        "properties.request_id",
        f"request {o.request_id!r} was already billed from row {o.kept_row} of "
        f"{o.kept_path} through mapping {o.mapping!r}"
        + (f" with {' and '.join(differs)}" if differs else "")
        + f"; this record (split {o.split}) is not billed",
    )


