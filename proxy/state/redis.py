"""The Redis store: state every replica shares (DESIGN §10).

Keys (all under the prefix, default ``aiep:``; one key id's keys share a hash tag, so a
script touching them runs on one Redis Cluster slot):

    key:{<id>}:rpm      sorted set: admitted request times (ms), the last 60 s
    key:{<id>}:tpm      hash: second → tokens, the last 60 s
    key:{<id>}:spend    string: USD spent (INCRBYFLOAT)
    budgets             hash: key id → budget limit set through the admin API
    providers           hash: name → {"item": …, "sealedKey": …} (keys sealed by the vault)
    circuit:<name>      string with a TTL: the provider's circuit is open until it expires
    cache:<namespace>:… aiocache entries (key verification, responses)
    changes             pub/sub channel (proxy.state.bus)

Times come from Redis (`TIME`), so replicas with skewed clocks still share one window.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import msgspec
import structlog
from aiocache.backends.redis import RedisCache
from aiocache.base import BaseCache
from redis import asyncio as aioredis
from redis import exceptions as redis_errors

from proxy.state.base import BytesSerializer, Rule, StateUnavailable, Store, Verdict
from proxy.state.bus import Bus
from proxy.state.memory import BUDGET_RETRY_AFTER

log = structlog.get_logger("proxy.state")

# Budget, then TPM, then RPM; a request slot is taken only when every check passed.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local budget = tonumber(ARGV[3])
if budget > 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent >= budget then return {'budget', 0, tostring(spent)} end
end
local tpm = tonumber(ARGV[2])
if tpm > 0 then
  local second = math.floor(now / 1000)
  local buckets = redis.call('HGETALL', KEYS[2])
  local used, oldest = 0, second
  for i = 1, #buckets, 2 do
    local s = tonumber(buckets[i])
    if s <= second - 60 then
      redis.call('HDEL', KEYS[2], buckets[i])
    else
      used = used + tonumber(buckets[i + 1])
      if s < oldest then oldest = s end
    end
  end
  if used >= tpm then return {'tpm', oldest + 60 - second, tostring(used)} end
end
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', math.ceil((tonumber(first[2]) + 60000 - now) / 1000), tostring(n)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 60000)
end
return {'', 0, '0'}
"""

CHARGE = """
local tokens = tonumber(ARGV[1])
if tokens > 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[1], t[1], tokens)
  redis.call('EXPIRE', KEYS[1], 61)
end
if tonumber(ARGV[2]) > 0 then redis.call('INCRBYFLOAT', KEYS[2], ARGV[2]) end
return 1
"""


def guarded(method):
    """Redis and socket errors leave as StateUnavailable, the one error callers handle."""

    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except (redis_errors.RedisError, OSError) as exc:
            raise StateUnavailable(f"the Redis store failed: {type(exc).__name__}: {exc}") from exc

    return call


def split_url(url: str) -> tuple[str, str]:
    """(the URL redis-py understands, the key prefix from its `prefix` query parameter)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", ["aiep:"])[0]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True))), prefix


def cache_backend(url: str, namespace: str) -> BaseCache:
    """An aiocache Redis cache of bytes for `url` (its prefix goes before the namespace)."""
    plain, prefix = split_url(url)
    parts = urlsplit(plain)
    db = int(parts.path.strip("/") or 0)
    pool = {"username": parts.username} if parts.username else {}
    return RedisCache(serializer=BytesSerializer(), namespace=f"{prefix}cache:{namespace}",
                      endpoint=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=db,
                      password=parts.password, ssl=parts.scheme == "rediss", timeout=2,
                      create_connection_timeout=2, connection_pool_kwargs=pool)


class _Row(msgspec.Struct, rename="camel"):
    item: msgspec.Raw
    sealed_key: str | None = None


class RedisProviders:
    """Admin registrations in one hash; every change is announced on the `providers` topic."""

    def __init__(self, client, key: str, bus: Bus) -> None:
        self._client, self._key, self._bus = client, key, bus

    @guarded
    async def rows(self) -> list[tuple[bytes, str | None]]:
        found = await self._client.hgetall(self._key)
        rows = [msgspec.json.decode(raw, type=_Row) for _, raw in sorted(found.items())]
        return [(bytes(row.item), row.sealed_key) for row in rows]

    @guarded
    async def put(self, rows: list[tuple[str, bytes, str | None]]) -> None:
        mapping = {name: msgspec.json.encode(_Row(msgspec.Raw(item), sealed)) for name, item, sealed in rows}
        await self._client.hset(self._key, mapping=mapping)
        await self._bus.publish("providers")

    @guarded
    async def delete(self, name: str) -> bool:
        removed = await self._client.hdel(self._key, name)
        if removed:
            await self._bus.publish("providers")
        return bool(removed)


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, cache_url: str | None = None) -> None:
        super().__init__()
        plain, self.prefix = split_url(url)
        self.url = url
        self.cache_url = cache_url or url
        origin = os.urandom(6).hex()  # this process, in messages and in CLIENT LIST
        self.client = aioredis.from_url(plain, socket_connect_timeout=2, socket_timeout=5,
                                        health_check_interval=15, decode_responses=False,
                                        client_name=f"ai-enabler-proxy-{origin}")
        self.bus = Bus(self.client, self.prefix + "changes", self._deliver, origin)
        self.providers = RedisProviders(self.client, self.prefix + "providers", self.bus)
        self._admit = self.client.register_script(ADMIT)
        self._charge = self.client.register_script(CHARGE)
        self._seq = 0

    async def start(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.client.ping()
                break
            except (redis_errors.RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise StateUnavailable(f"cannot reach the Redis store: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(0.2)
        self.bus.start()
        try:
            await asyncio.wait_for(self.bus.synced.wait(), max(deadline - time.monotonic(), 1.0))
        except TimeoutError:
            raise StateUnavailable("subscribed to the Redis store but could not load its state") from None

    async def close(self) -> None:
        await self.bus.close()
        await super().close()
        await self.client.aclose()

    async def _deliver(self, topic: str | None, data: dict | None) -> None:
        for name in ([topic] if topic is not None else list(self._listeners)):
            await self.notify(name, data)

    def _key(self, key_id: str, what: str) -> str:
        return f"{self.prefix}key:{{{key_id}}}:{what}"

    # -- limits -------------------------------------------------------------------------------
    @guarded
    async def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        self._seq += 1
        keys = [self._key(key_id, "rpm"), self._key(key_id, "tpm"), self._key(key_id, "spend")]
        member = f"{self.bus.origin}:{self._seq}"
        limit, retry, used = await self._admit(keys=keys, args=[rule.rpm, rule.tpm, repr(rule.budget), member])
        if not limit:
            return None
        limit = limit.decode()
        retry = BUDGET_RETRY_AFTER if limit == "budget" else max(int(retry), 1)
        return Verdict(limit, retry, float(used))

    @guarded
    async def charge(self, key_id: str, tokens: int, cost: float) -> None:
        if tokens > 0 or cost > 0:
            await self._charge(keys=[self._key(key_id, "tpm"), self._key(key_id, "spend")],
                               args=[max(tokens, 0), repr(max(cost, 0.0))])

    @guarded
    async def spend(self, key_id: str) -> float:
        return float(await self.client.get(self._key(key_id, "spend")) or 0.0)

    @guarded
    async def set_spend(self, key_id: str, usd: float) -> None:
        await self.client.set(self._key(key_id, "spend"), repr(usd))

    @guarded
    async def budgets(self) -> dict[str, float]:
        found = await self.client.hgetall(self.prefix + "budgets")
        return {k.decode(): float(v) for k, v in found.items()}

    @guarded
    async def set_budget(self, key_id: str, limit: float | None) -> None:
        if limit is None:
            await self.client.hdel(self.prefix + "budgets", key_id)
        else:
            await self.client.hset(self.prefix + "budgets", key_id, repr(limit))
        await self.bus.publish("budgets", {"keyId": key_id})
        await self.notify("budgets", {"keyId": key_id})

    # -- circuits -----------------------------------------------------------------------------
    @guarded
    async def open_circuit(self, name: str, seconds: float) -> None:
        ms = max(int(seconds * 1000), 1)
        await self.client.set(f"{self.prefix}circuit:{name}", b"1", px=ms)
        await self.bus.publish("circuit", {"name": name, "seconds": seconds})

    @guarded
    async def circuits(self) -> dict[str, float]:
        start = len(self.prefix) + len("circuit:")
        found = {}
        async for key in self.client.scan_iter(match=f"{self.prefix}circuit:*", count=500):
            ttl = await self.client.pttl(key)
            if ttl > 0:
                found[key.decode()[start:]] = ttl / 1000
        return found
