"""The store interface's shared parts: rules, topics, background writes, the cache choice."""

from __future__ import annotations

import asyncio

import pytest
from aiocache import SimpleMemoryCache

from proxy.state.base import BytesSerializer, Rule, StateUnavailable, Verdict
from proxy.state.memory import EmbeddedStore


def test_rule_defaults_mean_no_limit():
    assert Rule() == (0, 0, 0.0)
    assert Verdict("rpm", 3, 100.0).limit == "rpm"


def test_bytes_serializer_keeps_bytes():
    serializer = BytesSerializer()
    assert serializer.encoding is None
    assert serializer.loads(serializer.dumps(b"\x00\xff")) == b"\x00\xff"


async def test_topics_reach_every_listener_in_order():
    store = EmbeddedStore()
    seen = []

    async def first(data):
        seen.append(("first", data))

    async def second(data):
        seen.append(("second", data))

    store.subscribe("budgets", first)
    store.subscribe("budgets", second)
    await store.notify("budgets", {"keyId": "a"})
    await store.notify("other", None)
    assert seen == [("first", {"keyId": "a"}), ("second", {"keyId": "a"})]


async def test_spawned_writes_are_kept_and_their_outage_is_logged_not_raised():
    store = EmbeddedStore()
    done = asyncio.Event()

    async def fails():
        done.set()
        raise StateUnavailable("down")

    store.spawn(fails())
    await done.wait()
    await asyncio.sleep(0)
    assert not store._tasks  # finished, no "exception was never retrieved"
    await store.close()


async def test_caches_live_in_memory_unless_a_redis_url_is_given():
    cache = EmbeddedStore().cache("x")
    assert isinstance(cache, SimpleMemoryCache)
    await cache.set("k", b"v", ttl=5)
    assert await cache.get("k") == b"v"
    assert isinstance(EmbeddedStore(cache_url="memory://").cache("x"), SimpleMemoryCache)
    assert type(EmbeddedStore(cache_url="redis://127.0.0.1:1/0").cache("x")).__name__ == "RedisCache"


def test_store_url_chooses_the_implementation(tmp_path):
    import msgspec
    import pytest

    from proxy.config import Config, ConfigError
    from proxy.state import open_store
    from proxy.state.redis import RedisStore

    def cfg(**kw):
        return msgspec.convert({"dataDir": str(tmp_path), **kw}, type=Config)

    assert isinstance(open_store(cfg()), EmbeddedStore)
    assert isinstance(open_store(cfg(storeUrl=f"sqlite://{tmp_path}/s.db")), EmbeddedStore)
    assert (tmp_path / "s.db").exists()
    assert isinstance(open_store(cfg(storeUrl="redis://127.0.0.1:6379/0", secretKey="k")), RedisStore)
    with pytest.raises(ConfigError, match="PROXY_SECRET_KEY"):
        open_store(cfg(storeUrl="redis://127.0.0.1:6379/0"))
    with pytest.raises(ConfigError, match="STORE_URL"):
        open_store(cfg(storeUrl="memcached://x"))


async def test_a_closing_step_that_never_ends_is_left_after_its_bound():
    import time

    from proxy.state.base import bounded

    never = asyncio.get_running_loop().create_future()  # a Redis that stopped answering
    started = time.monotonic()
    await bounded(never, "test", seconds=0.2)
    assert 0.2 <= time.monotonic() - started < 1.5 and never.cancelled()

    async def fails():
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):  # a step that ends with an error still says so
        await bounded(fails(), "test")
