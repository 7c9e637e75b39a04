"""The causal ordering of the Prefect server's triggers service, with a short lookback.

Prefect's triggers service evaluates an event only after the event it ``follows``. A flow run's
state event follows the run's previous state event when the two are under five minutes apart,
but the scheduler inserts scheduled runs without an event for their Scheduled state: so the
first run of a new or re-applied schedule (every ``prefect deploy`` and ``tallyflow serve``
start), due within five minutes, sends a Pending event that follows an event nobody ever sees.
Prefect holds it, and the run's Running and Failed events behind it, for 15 minutes before it
gives up waiting: the first failure after a deploy was announced 15 minutes late.

This module is Prefect's in-memory ordering (``prefect.server.events.ordering.memory``, the
default) with that wait shortened to ``LOOKBACK``: a lost leader costs seconds, not a quarter of
an hour. State events come from the server itself, in order, so nothing is reordered wrongly.
The server Tallyflow starts uses it (``tallyflow/infra/prefect_server.py``); a self-hosted
server opts in with ``PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=tallyflow.infra.event_ordering``.
Pinned by ``tests/live/test_first_failure_announced.py``.
"""

from __future__ import annotations

from datetime import timedelta

import prefect.types._datetime
from prefect.server.events.ordering import memory
from prefect.server.events.schemas.events import ReceivedEvent

LOOKBACK = timedelta(seconds=30)
SETTING = "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"


class CausalOrdering(memory.CausalOrdering):
    _instances: dict[str, memory.CausalOrdering] = {}  # its own: one instance per scope

    def _waited_enough(self, event: ReceivedEvent) -> bool:
        return prefect.types._datetime.now("UTC") - event.received >= LOOKBACK

    async def wait_for_leader(self, event: ReceivedEvent) -> None:
        """As Prefect's, but an event whose leader has not come for ``LOOKBACK`` goes on."""
        if event.follows and event.follows != event.id and self._waited_enough(event):
            return
        await super().wait_for_leader(event)

    async def get_lost_followers(self) -> list[ReceivedEvent]:
        """Events that waited ``LOOKBACK`` for a leader (Prefect's bookkeeping, its cutoff)."""
        cutoff = prefect.types._datetime.now("UTC") - LOOKBACK
        async with self._lock:
            lost: list[ReceivedEvent] = []
            for event_id in [e for e, received in self._waitlist.items() if received <= cutoff]:
                event = self._events.pop(event_id, None)
                del self._waitlist[event_id]
                if event is None:
                    continue
                lost.append(event)
                if event.follows and event.follows in self._followers:
                    self._followers[event.follows].discard(event_id)
                    if not self._followers[event.follows]:
                        del self._followers[event.follows]
        return sorted(lost, key=lambda e: e.occurred)
