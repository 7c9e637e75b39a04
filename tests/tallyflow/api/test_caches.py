"""The API's in-process caches (docs/architecture.md §22): an API key is trusted for at most
its TTL after it was read, a balance answer is served for at most its TTL, and concurrent
misses for one customer share one database read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tallyflow.api import balances
from tallyflow.api.balances import BalanceCache
from tallyflow.api.keys import KeyCache
from tallyflow.tasks.wallets import WalletError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("age", "cached"), [(0.0, True), (4.999, True), (5.0, False), (60.0, False)]
)
def test_a_key_is_trusted_for_less_than_its_ttl(age: float, cached: bool) -> None:
    clock = Clock()
    keys = KeyCache(ttl=5.0, clock=clock)
    assert keys.get("tf_a") is None
    keys.put("tf_a", "billing")
    clock.now += age
    assert keys.get("tf_a") == ("billing" if cached else None)


def test_unknown_keys_are_never_cached_and_the_cache_is_bounded() -> None:
    keys = KeyCache(ttl=5.0, size=2, clock=Clock())
    keys.put("tf_nope", None)
    assert keys.get("tf_nope") is None
    for key in ("tf_a", "tf_b", "tf_c"):
        keys.put(key, key)
    assert [keys.get(k) for k in ("tf_a", "tf_b", "tf_c")] == [None, "tf_b", "tf_c"]
    off = KeyCache(ttl=0)
    off.put("tf_a", "a")
    assert off.get("tf_a") is None


def test_a_balance_is_served_for_its_ttl_and_misses_share_one_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []

    def read(engine: Any, customer: str) -> Any:
        reads.append(customer)
        if customer == "nobody":
            return WalletError("unknown customer")
        return {"external_customer_id": customer, "n": len(reads)}

    monkeypatch.setattr(balances, "read_balance", read)
    clock = Clock()
    cache = BalanceCache(ttl=0.5, clock=clock)

    async def scenario() -> list[Any]:
        first = await asyncio.gather(*(cache.get(None, "acme") for _ in range(20)))  # type: ignore[arg-type]
        clock.now += 0.49
        within = await cache.get(None, "acme")  # type: ignore[arg-type]
        clock.now += 0.01
        after = await cache.get(None, "acme")  # type: ignore[arg-type]
        missing = await cache.get(None, "nobody")  # type: ignore[arg-type]
        return [first, within, after, missing]

    first, within, after, missing = asyncio.run(scenario())
    assert {answer["n"] for answer in first} == {1} and within["n"] == 1
    assert after["n"] == 2 and isinstance(missing, WalletError)
    assert reads == ["acme", "acme", "nobody"]
