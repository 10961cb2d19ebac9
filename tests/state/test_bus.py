"""Change notification: topics between replicas, own messages skipped, catch-up after a drop."""

from __future__ import annotations

import asyncio

import orjson
from redis import asyncio as aioredis

from proxy.state.redis import RedisStore, split_url


async def _started(url):
    store = RedisStore(url)
    seen = asyncio.Queue()

    async def listener(data):
        await seen.put(data)

    store.subscribe("providers", listener)
    await store.start()
    assert await asyncio.wait_for(seen.get(), 1.0) is None  # the first subscription catches up
    return store, seen


async def test_messages_reach_others_not_their_sender(redis_url):
    one, seen_one = await _started(redis_url)
    two, seen_two = await _started(redis_url)
    await one.bus.publish("providers", {"n": 1})
    assert await asyncio.wait_for(seen_two.get(), 1.0) == {"n": 1}
    await asyncio.sleep(0.05)
    assert seen_one.empty()
    await one.close()
    await two.close()


async def test_garbage_on_the_channel_is_ignored(redis_url):
    one, seen = await _started(redis_url)
    plain, prefix = split_url(redis_url)
    client = aioredis.from_url(plain)
    await client.publish(prefix + "changes", b"not json")
    await client.publish(prefix + "changes", orjson.dumps({"t": "providers", "o": "someone", "d": {"ok": True}}))
    assert await asyncio.wait_for(seen.get(), 1.0) == {"ok": True}
    await client.aclose()
    await one.close()


async def test_a_dropped_connection_resubscribes_and_reloads(redis_url):
    store, seen = await _started(redis_url)
    plain, _ = split_url(redis_url)
    admin = aioredis.from_url(plain)
    name = f"ai-enabler-proxy-{store.bus.origin}"
    clients = (await admin.execute_command("CLIENT", "LIST", "TYPE", "pubsub")).decode()
    ids = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)["id"]
           for line in clients.splitlines() if f"name={name} " in line]
    assert ids
    for ident in ids:
        await admin.execute_command("CLIENT", "KILL", "ID", ident)
    assert await asyncio.wait_for(seen.get(), 3.0) is None  # reconnected: reload everything
    await admin.aclose()
    await store.close()
