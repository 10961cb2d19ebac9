"""Three replicas on Redis Sentinel and on a Redis Cluster, started here (tests.state.servers):
live registrations, exact shared limits, and a Sentinel failover under load."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.state import servers
from tests.state.fleet import ADMIN, Load, burst, chat, fleet, key, prefix, recovered


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory):
    servers.binaries_or_skip("redis-server")
    found = servers.SentinelSet(tmp_path_factory.mktemp("sentinel"))
    yield found
    found.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    servers.binaries_or_skip("redis-server", "redis-cli")
    found = servers.Cluster(tmp_path_factory.mktemp("cluster"))
    yield found
    found.stop()


@pytest.fixture(params=["sentinel", "cluster"])
def store_url(request):
    return request.getfixturevalue("sentinel_set" if request.param == "sentinel" else "cluster").url(prefix())


async def test_a_registration_on_one_replica_serves_on_the_others_within_a_second(gateway, tmp_path, store_url):
    replicas = await fleet(gateway, tmp_path, store_url, [key("plain")])
    item = {"name": "late", "supportedProvider": "MOCK", "models": ["late-model"], "isHosted": True}
    assert (await chat(replicas[1], "plain", "late-model"))[0] == 404
    async with replicas[0].post("/v1/llm/providers", json={"providers": [item]}, headers=ADMIN) as r:
        assert r.status == 200
    registered, seen = time.monotonic(), {}
    while len(seen) < 2 and time.monotonic() - registered < 2:
        for i in (1, 2):
            if i not in seen and (await chat(replicas[i], "plain", "late-model"))[0] == 200:
                seen[i] = time.monotonic() - registered
        await asyncio.sleep(0.005)
    print(f"\n{store_url.split(':')[0]}: registration live on the other replicas after "
          f"{max(seen.values(), default=9) * 1000:.1f} ms")
    assert len(seen) == 2 and max(seen.values()) < 1.0


async def test_rpm_100_across_three_replicas_admits_exactly_100(gateway, tmp_path, store_url):
    replicas = await fleet(gateway, tmp_path, store_url, [key("rpm", rpm=100)])
    statuses = await burst(replicas, "rpm", 150)
    assert statuses.count(200) == 100 and statuses.count(429) == 50
    assert not any(r.gw.state.fallback.switches["fallback"] for r in replicas)


async def test_a_sentinel_failover_under_load_keeps_serving_and_counting(gateway, tmp_path, sentinel_set):
    """Kill the primary while 3 replicas serve 50 requests/s: every request succeeds, a limited
    key stays within its replicas' shares, and once the replica is promoted counting is shared
    and exact again (the counts made meanwhile included)."""
    limit = 60
    replicas = await fleet(gateway, tmp_path, sentinel_set.url(prefix()),
                           [key("load", budgetUsd=1000.0), key("lim", rpm=limit), key("after", rpm=30)])
    load = Load(replicas, "load", 50).start()
    await asyncio.sleep(0.5)
    before = (await burst(replicas, "lim", limit // 2)).count(200)
    shares = [max(0, limit // 3 - r.gw.state.fallback.seen["lim"].requests // 3) for r in replicas]
    sentinel_set.primary.kill()
    killed = time.monotonic()
    await asyncio.sleep(0.3)  # the replicas find it gone through their own traffic and heartbeats
    during = (await burst(replicas, "lim", limit + limit // 2)).count(200)
    on_fallback = [r.gw.state.fallback.down for r in replicas]
    promotion = await asyncio.to_thread(sentinel_set.wait_promoted)
    lag = await recovered(replicas)
    await asyncio.sleep(0.5)
    log = await load.stop()
    failed = [status for _, status, _ in log if status != 200]
    after_lim = (await burst(replicas, "lim", 10)).count(200)
    after = await burst(replicas, "after", 45)
    print(f"\nSentinel failover: promoted {time.monotonic() - killed:.2f} s after the kill (waited "
          f"{promotion:.2f} s), replicas shared again {lag:.2f} s later; {len(log)} requests under load, "
          f"{len(failed)} failed; rpm {limit}: {before} admitted before, {during} on fallback, "
          f"{after_lim} after")
    assert before == limit // 2 and not failed
    # each replica admits its share of the limit less its share of the count it saw last
    assert on_fallback == [True] * 3 and during == sum(shares)
    assert after_lim == max(0, limit - before - during)  # the fallback's admissions were reconciled
    assert after.count(200) == 30 and after.count(429) == 15


async def test_circuits_and_caches_are_shared_on_each_topology(store_url):
    from proxy.state.base import close_cache
    from proxy.state.redis import RedisStore

    one, two = RedisStore(store_url), RedisStore(store_url)
    await one.start()
    await two.start()
    try:
        await one.open_circuit("prov", 30.0)
        assert 29 < (await two.circuits())["prov"] <= 30  # a SCAN over every node of a cluster
        cache_one, cache_two = one.cache("responses"), two.cache("responses")
        await cache_one.set("k", b"\x00bytes", ttl=5.0)
        assert await cache_two.get("k") == b"\x00bytes"
        await close_cache(cache_one)
        await close_cache(cache_two)
    finally:
        await one.close()
        await two.close()
