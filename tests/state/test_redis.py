"""The Redis store against a real redis-server on loopback: atomic limits, shared budgets,
circuits, registrations and caches. Each test has a key prefix of its own (`redis_url`)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.state.base import Rule, StateUnavailable, close_cache
from proxy.state.redis import RedisStore, split_url


@pytest.fixture
async def stores(redis_url):
    """`await stores(n)`: n started stores on one Redis, as n replicas would have."""
    made = []

    async def make(n: int = 1):
        batch = [RedisStore(redis_url) for _ in range(n)]
        for store in batch:
            await store.start()
        made.extend(batch)
        return batch

    yield make
    for store in made:
        await store.close()


def test_split_url_takes_the_prefix_out():
    assert split_url("redis://h:1/2?prefix=p:&ssl_cert_reqs=none") == ("redis://h:1/2?ssl_cert_reqs=none", "p:")
    assert split_url("redis://h/0") == ("redis://h/0", "aiep:")


async def test_rpm_admits_exactly_the_limit_under_concurrency_from_three_replicas(stores):
    replicas = await stores(3)
    verdicts = await asyncio.gather(*(replicas[i % 3].admit("k", Rule(rpm=50)) for i in range(200)))
    admitted = [v for v in verdicts if v is None]
    refused = [v for v in verdicts if v is not None]
    assert len(admitted) == 50
    assert {v.limit for v in refused} == {"rpm"} and all(1 <= v.retry_after <= 60 for v in refused)


async def test_tpm_and_budget_are_counted_atomically(stores):
    one, two = await stores(2)
    assert await one.admit("k", Rule(tpm=100)) is None
    await asyncio.gather(*(two.charge("k", 10, 0.001) for _ in range(10)))
    verdict = await one.admit("k", Rule(tpm=100))
    assert verdict.limit == "tpm" and verdict.used == 100 and 1 <= verdict.retry_after <= 60
    assert await one.spend("k") == pytest.approx(0.01)
    verdict = await two.admit("k", Rule(budget=0.01))
    assert verdict.limit == "budget" and verdict.used == pytest.approx(0.01)
    assert await two.admit("k", Rule(budget=0.02)) is None
    await one.set_spend("k", 0.0)
    assert await two.spend("k") == 0.0


async def test_budgets_set_on_one_replica_are_announced_to_the_others(stores):
    one, two = await stores(2)
    seen = asyncio.Queue()

    async def listener(data):
        await seen.put(data)

    two.subscribe("budgets", listener)
    await one.set_budget("team", 4.5)
    assert await asyncio.wait_for(seen.get(), 1.0) == {"keyId": "team"}
    assert await two.budgets() == {"team": 4.5}
    await one.set_budget("team", None)
    assert await asyncio.wait_for(seen.get(), 1.0) == {"keyId": "team"}
    assert await two.budgets() == {}


async def test_circuits_are_shared_with_their_time_left(stores):
    one, two = await stores(2)
    seen = asyncio.Queue()

    async def listener(data):
        await seen.put(data)

    two.subscribe("circuit", listener)
    await one.open_circuit("prov", 30.0)
    assert await asyncio.wait_for(seen.get(), 1.0) == {"name": "prov", "seconds": 30.0}
    left = await two.circuits()
    assert 29 < left["prov"] <= 30


async def test_registrations_are_rows_in_one_hash(stores):
    one, two = await stores(2)
    seen = asyncio.Queue()

    async def listener(data):
        await seen.put(data)

    two.subscribe("providers", listener)
    await one.providers.put([("b", b'{"name":"b"}', None), ("a", b'{"name":"a"}', "sealed")])
    await asyncio.wait_for(seen.get(), 1.0)
    assert await two.providers.rows() == [(b'{"name":"a"}', "sealed"), (b'{"name":"b"}', None)]
    assert await two.providers.delete("a") is True
    assert await two.providers.delete("a") is False
    assert await one.providers.rows() == [(b'{"name":"b"}', None)]


async def test_caches_are_shared_bytes(stores):
    one, two = await stores(2)
    cache_one, cache_two = one.cache("responses"), two.cache("responses")
    await cache_one.set("k", b"\x00\x01binary", ttl=5.0)
    assert await cache_two.get("k") == b"\x00\x01binary"
    await close_cache(cache_one)
    await close_cache(cache_two)


async def test_an_unreachable_redis_is_a_clear_error():
    # state.outage: refuse keeps the old answer; the default (local) counts here instead
    store = RedisStore("redis://127.0.0.1:1/0", outage="refuse")
    with pytest.raises(StateUnavailable, match="cannot reach the Redis store"):
        await store.start(timeout=0.3)
    with pytest.raises(StateUnavailable):
        await store.admit("k", Rule(rpm=1))
    await store.client.aclose()
    store = RedisStore("redis://127.0.0.1:1/0")
    assert await store.admit("k", Rule(rpm=1)) is None
    assert (await store.admit("k", Rule(rpm=1))).limit == "rpm"
    await store.client.aclose()


async def test_an_unreachable_cluster_is_an_outage_like_an_unreachable_server():
    # redis-py reports a cluster it cannot reach with RedisClusterException, which is not a
    # RedisError: it must still mean "the store is away" (fallback, StateUnavailable), not a 500
    store = RedisStore("redis+cluster://127.0.0.1:1")
    try:
        with pytest.raises(StateUnavailable, match="cannot reach the Redis store"):
            await store.start(timeout=0.3)
        assert await store.admit("k", Rule(rpm=1)) is None  # counted on the local fallback
        assert store.fallback.down
        await store.charge("k", 5, 0.25)
        assert store.fallback.local.batch.spend == {"k": 0.25}
        with pytest.raises(StateUnavailable):
            await store.beat()  # the prober's call: what keeps it probing
        with pytest.raises(StateUnavailable):
            await store.spend("k")
    finally:
        await store.client.aclose()
    refusing = RedisStore("redis+cluster://127.0.0.1:1", outage="refuse")
    try:
        with pytest.raises(StateUnavailable):
            await refusing.admit("k", Rule(rpm=1))
    finally:
        await refusing.client.aclose()
