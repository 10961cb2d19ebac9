"""The fallback while the shared store is away: shares of the limits, budgets on the spend
known, refusal, jittered reconnection, and reconciliation applied exactly once (real Redis)."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from proxy.state.base import Rule, StateUnavailable
from proxy.state.outage import BACKOFF_CAP, Fallback, backoff
from proxy.state.redis import RedisStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fallback(policy: str = "local", alive: int = 3) -> tuple[Fallback, Clock]:
    clock = Clock()
    fallback = Fallback(policy, "origin", clock=clock)
    fallback.alive = alive
    return fallback, clock


def _admitted(fallback: Fallback, key_id: str, rule: Rule, tries: int) -> int:
    return sum(1 for _ in range(tries) if fallback.admit(key_id, rule) is None)


def test_rpm_is_shared_out_between_the_replicas_alive_less_their_share_of_the_count_seen():
    fallback, _ = _fallback(alive=3)
    fallback.saw("seen", 30, 0, 0.0)
    fallback.enter(ConnectionError("gone"))
    assert _admitted(fallback, "seen", Rule(rpm=60), 50) == 60 // 3 - 30 // 3
    assert _admitted(fallback, "fresh", Rule(rpm=60), 50) == 20
    assert fallback.admit("fresh", Rule(rpm=60)).limit == "rpm"


def test_concurrent_replies_in_any_order_keep_the_highest_count_for_a_second():
    fallback, clock = _fallback()
    fallback.saw("k", 30, 0, 0.0)
    fallback.saw("k", 12, 0, 0.0)  # an earlier request's reply, read later
    assert fallback.seen["k"].requests == 30
    clock.now += 2  # the window may have shrunk since
    fallback.saw("k", 12, 0, 0.0)
    assert fallback.seen["k"].requests == 12


def test_one_replica_alone_or_unknown_counts_the_whole_limit():
    fallback, _ = _fallback(alive=1)
    fallback.enter(ConnectionError("gone"))
    assert _admitted(fallback, "k", Rule(rpm=7), 10) == 7


def test_tpm_share_and_the_budget_on_the_spend_known_plus_the_spend_here():
    fallback, _ = _fallback(alive=2)
    fallback.saw("k", 0, 0, 0.75)
    fallback.enter(ConnectionError("gone"))
    assert fallback.admit("k", Rule(tpm=100, budget=1.0)) is None
    fallback.charge("k", 50, 0.2)
    assert fallback.admit("k", Rule(tpm=100, budget=1.0)).limit == "tpm"  # 50 of a 100 / 2 share
    fallback.charge("k", 0, 0.05)
    verdict = fallback.admit("k", Rule(budget=1.0))
    assert verdict.limit == "budget" and verdict.used == pytest.approx(1.0)
    assert fallback.local.batch.spend == {"k": pytest.approx(0.25)}


def test_refuse_raises_but_still_keeps_the_spend():
    fallback, _ = _fallback("refuse")
    fallback.enter(ConnectionError("gone"))
    with pytest.raises(StateUnavailable):
        fallback.admit("k", Rule(rpm=5))
    fallback.charge("k", 0, 0.5)
    assert fallback.local.batch.spend == {"k": 0.5}


def test_every_switch_is_counted_once():
    fallback, _ = _fallback()
    for _ in range(5):
        fallback.enter(ConnectionError("gone"))
    assert fallback.switches == {"fallback": 1, "shared": 0} and fallback.down


def test_backoff_is_full_jitter_under_a_cap():
    early = [backoff(0) for _ in range(200)]
    late = [backoff(20) for _ in range(200)]
    assert max(early) <= 0.05 and max(late) <= BACKOFF_CAP
    assert statistics.pstdev(late) > BACKOFF_CAP / 5  # spread out, not in step


async def test_a_batch_is_applied_once_even_when_sent_again(redis_url):
    store = RedisStore(redis_url)
    await store.start()
    try:
        fallback = store.fallback
        fallback.enter(ConnectionError("gone"))
        for _ in range(3):
            assert await store.admit("k", Rule(rpm=10)) is None
            await store.charge("k", 7, 0.125)
        batch = fallback.local.batch
        await store.settle(batch)
        await store.settle(batch)  # its reply was lost: sent again
        assert await store.spend("k") == pytest.approx(0.375)
        assert await store.client.zcard(store._key("k", "rpm")) == 3
        assert sum(int(v) for v in (await store.client.hgetall(store._key("k", "tpm"))).values()) == 21
    finally:
        await store.close()


async def test_the_prober_finds_the_store_and_reconciles_what_was_counted_meanwhile(redis_url):
    store = RedisStore(redis_url, heartbeat=0.1)
    await store.start()
    try:
        store.fallback.enter(ConnectionError("a blip"))
        await store.charge("k", 0, 0.5)  # counted here, not in Redis
        assert store.fallback.local is not None
        for _ in range(200):
            if not store.fallback.down and not store.fallback.unsettled:
                break
            await asyncio.sleep(0.01)
        assert store.fallback.switches == {"fallback": 1, "shared": 1}
        assert await store.spend("k") == 0.5
        assert await store.admit("k", Rule(budget=0.5)) is not None  # counting is shared again
    finally:
        await store.close()


async def test_a_charge_the_store_cannot_take_is_kept_not_lost():
    store = RedisStore("redis://127.0.0.1:1/0")
    await store.charge("k", 10, 0.25)
    assert store.fallback.down and store.fallback.local.batch.spend == {"k": 0.25}
    await store.client.aclose()


async def test_the_prober_outlives_an_unexpected_error_and_still_brings_the_store_back():
    # a prober that dies leaves every replica on its fallback for good: shares of the limits,
    # spend never reconciled. An error it does not know must cost one round, not the prober.
    fallback = Fallback("local", "origin", heartbeat=0.01)
    calls = []

    async def probe() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a surprise from the client library")
        return 2

    async def settle(batch) -> None:
        pass

    fallback.enter(ConnectionError("a blip"))
    task = asyncio.create_task(fallback.run(probe, settle))
    try:
        for _ in range(300):
            if not fallback.down:
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception() if task.done() else None
        assert not fallback.down and fallback.alive == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
