"""The Lua scripts on a real Redis: what ADMIT reports besides its verdict, SETTLE applied once
per batch, BEAT counting the replicas alive."""

from __future__ import annotations

import asyncio

from redis import asyncio as aioredis

from proxy.state import scripts
from proxy.state.clients import split_url


async def _client(redis_url):
    plain, prefix = split_url(redis_url)
    return aioredis.from_url(plain), prefix


async def test_admit_reports_the_windows_and_the_spend(redis_url):
    client, p = await _client(redis_url)
    admit = client.register_script(scripts.ADMIT)
    keys = [f"{p}key:{{k}}:rpm", f"{p}key:{{k}}:tpm", f"{p}key:{{k}}:spend"]
    await client.set(keys[2], "0.5")
    await client.hset(keys[1], mapping={str(int((await client.time())[0])): 40})
    for n in (1, 2):
        assert await admit(keys=keys, args=[5, 100, "1.0", f"m{n}"]) == [b"", 0, b"0", n, 40, b"0.5"]
    limit, _, used, requests, tokens, spent = await admit(keys=keys, args=[2, 100, "1.0", "m3"])
    assert (limit, used, requests, tokens, spent) == (b"rpm", b"2", 2, 40, b"0.5")
    await client.aclose()


async def test_settle_applies_a_batch_once(redis_url):
    client, p = await _client(redis_url)
    settle = client.register_script(scripts.SETTLE)
    keys = [f"{p}key:{{k}}:rpm", f"{p}key:{{k}}:tpm", f"{p}key:{{k}}:spend", f"{p}key:{{k}}:settled:b1"]
    args = ["0.25", "origin:b1", 2, 1500, 500, 2000, 30]  # 2 requests 1.5 s and 0.5 s ago; 30 tokens 2 s ago
    assert await settle(keys=keys, args=args) == 1
    assert await settle(keys=keys, args=args) == 0
    assert float(await client.get(keys[2])) == 0.25
    assert await client.zcard(keys[0]) == 2
    assert [int(v) for v in (await client.hgetall(keys[1])).values()] == [30]
    assert 0 < await client.ttl(keys[3]) <= 86400
    await client.aclose()


async def test_beat_counts_the_replicas_whose_heartbeat_is_recent(redis_url):
    client, p = await _client(redis_url)
    beat = client.register_script(scripts.BEAT)
    key = [f"{p}replicas"]
    assert await beat(keys=key, args=["a", 200]) == 1
    assert await beat(keys=key, args=["b", 200]) == 2
    assert await beat(keys=key, args=["a", 200]) == 2
    await asyncio.sleep(0.25)
    assert await beat(keys=key, args=["b", 200]) == 1  # a went silent
    await client.aclose()
