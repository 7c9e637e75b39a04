"""The balance endpoint's in-process cache (docs/architecture.md §22).

A gateway asks a customer's balance before every request, so thousands of reads a second ask
the same few customers. ``BalanceCache`` answers a customer from memory while its answer is
younger than ``ttl`` (``ApiSettings.balance_cache_seconds``, 0.5 s): the figure served is at
most that much older than ``running_usage`` and the wallets in the database. An older or
missing answer is read again with ``customer_balance`` in a worker thread, once per customer
however many requests wait for it (they all get that read's answer). The cache moves no money
and decides nothing the ledger keeps: it only delays what a read shows, by at most ``ttl``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.infra.settings import get_settings
from tallyflow.models.lago.results import CustomerBalance
from tallyflow.tasks.wallets import WalletError, customer_balance

BALANCE_CACHE_SIZE = 10_000  # customers remembered at once (least recently read go first)

# a customer's answer: the balance, or the WalletError that says it is unknown
Answer = CustomerBalance | WalletError


def read_balance(engine: Engine, external_customer_id: str) -> Answer:
    """One read of the database: the answer, or the error (kept like an answer)."""
    overdraft = get_settings().balance_overdraft_cents
    try:
        with engine.connect() as conn:
            return customer_balance(conn, external_customer_id, overdraft)
    except WalletError as error:
        return error


class BalanceCache:
    """Answers by customer, each served for ``ttl`` seconds after it was read (0: always
    read). Used on the event loop only (no lock)."""

    def __init__(
        self,
        ttl: float,
        size: int = BALANCE_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._answers: OrderedDict[str, tuple[Answer, float]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[Answer]] = {}
        self.hits = 0
        self.reads = 0

    def fresh(self, customer: str) -> Answer | None:
        """The customer's answer if it is younger than ``ttl``, else None."""
        cached = self._answers.get(customer)
        if cached is not None and self.clock() - cached[1] < self.ttl:
            self.hits += 1
            return cached[0]
        return None

    async def get(self, engine: Engine, customer: str) -> Answer:
        cached = self.fresh(customer)
        if cached is not None:
            return cached
        pending = self._reading.get(customer)
        if pending is not None:  # a read is under way: share its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._reading[customer] = future
        try:
            started = self.clock()  # the answer is as old as the moment the read began
            answer = await run_in_threadpool(read_balance, engine, customer)
            self.reads += 1
            self._keep(customer, answer, started)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else need wait for it
            raise
        finally:
            del self._reading[customer]

    def _keep(self, customer: str, answer: Answer, at: float) -> None:
        if self.ttl <= 0:
            return
        self._answers[customer] = (answer, at)
        self._answers.move_to_end(customer)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)
