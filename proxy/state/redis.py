"""The Redis store: state every replica shares (docs/deploy.md).

Keys (all under the prefix, default ``aiep:``; one key id's keys share a hash tag, so a
script touching them runs on one Redis Cluster slot):

    key:{<id>}:rpm      sorted set: admitted request times (ms), the last 60 s
    key:{<id>}:tpm      hash: second → tokens, the last 60 s
    key:{<id>}:spend    string: USD spent (INCRBYFLOAT)
    key:{<id>}:settled:<batch>  a batch counted during an outage was applied (one day)
    replicas            sorted set: replica → its last heartbeat (ms)
    budgets             hash: key id → budget limit set through the admin API
    providers           hash: name → {"item": …, "sealedKey": …} (keys sealed by the vault)
    circuit:<name>      string with a TTL: the provider's circuit is open until it expires
    cache:<namespace>:… aiocache entries (key verification, responses)
    changes             pub/sub channel (proxy.state.bus)

The URL may name one server, a Sentinel-watched primary or a Cluster (proxy.state.clients).
When Redis cannot be reached, limits are counted as `state.outage` says (proxy.state.outage).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time

import msgspec
import structlog
from redis import exceptions as redis_errors

from proxy.state import clients, scripts
from proxy.state.base import Rule, StateUnavailable, Store, Verdict, bounded
from proxy.state.bus import Bus
from proxy.state.memory import BUDGET_RETRY_AFTER
from proxy.state.outage import Batch, Fallback

log = structlog.get_logger("proxy.state")

# What "the store cannot be reached" looks like. redis-py reports a Cluster none of whose nodes
# answers (and a slot no node covers, during a failover) with RedisClusterException, which is
# not a RedisError: left out, a cluster outage would fail requests and end the prober.
_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)
split_url = clients.split_url


def guarded(method):
    """Redis and socket errors leave as StateUnavailable, the one error callers handle."""

    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except _ERRORS as exc:
            raise StateUnavailable(f"the Redis store failed: {type(exc).__name__}: {exc}") from exc

    return call


class _Row(msgspec.Struct, rename="camel"):
    item: msgspec.Raw
    sealed_key: str | None = None


class RedisProviders:
    """Admin registrations in one hash; every change is announced on the `providers` topic."""

    def __init__(self, client, key: str, bus: Bus, fallback: Fallback) -> None:
        self._client, self._key, self._bus, self._fallback = client, key, bus, fallback

    def _writable(self) -> None:
        if self._fallback.down:  # the registry keeps serving what it has; changes wait for the store
            raise StateUnavailable("the shared store is away: registrations are refused until it is back")

    @guarded
    async def rows(self) -> list[tuple[bytes, str | None]]:
        found = await self._client.hgetall(self._key)
        rows = [msgspec.json.decode(raw, type=_Row) for _, raw in sorted(found.items())]
        return [(bytes(row.item), row.sealed_key) for row in rows]

    @guarded
    async def put(self, rows: list[tuple[str, bytes, str | None]]) -> None:
        self._writable()
        mapping = {name: msgspec.json.encode(_Row(msgspec.Raw(item), sealed)) for name, item, sealed in rows}
        await self._client.hset(self._key, mapping=mapping)
        await self._bus.publish("providers")

    @guarded
    async def delete(self, name: str) -> bool:
        self._writable()
        removed = await self._client.hdel(self._key, name)
        if removed:
            await self._bus.publish("providers")
        return bool(removed)


class RedisStore(Store):
    shared = True

    def __init__(self, url: str, cache_url: str | None = None, outage: str = "local",
                 heartbeat: float = 2.0) -> None:
        super().__init__()
        target = clients.parse(url)
        self.prefix = target.prefix
        self.url = url
        self.cache_url = cache_url or url
        origin = os.urandom(6).hex()  # this process, in messages and in CLIENT LIST
        self.client = clients.connect(target, health_check_interval=15, client_name=f"ai-enabler-proxy-{origin}")
        self.fallback = Fallback(outage, origin, heartbeat)
        self.bus = Bus(self.client, self.prefix + "changes", self._deliver, origin)
        self.providers = RedisProviders(self.client, self.prefix + "providers", self.bus, self.fallback)
        self._admit = self.client.register_script(scripts.ADMIT)
        self._charge = self.client.register_script(scripts.CHARGE)
        self._settle = self.client.register_script(scripts.SETTLE)
        self._beat = self.client.register_script(scripts.BEAT)
        self._seq = 0

    async def start(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.client.ping()
                break
            except _ERRORS as exc:
                if time.monotonic() > deadline:
                    raise StateUnavailable(f"cannot reach the Redis store: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(0.2)
        self.bus.start()
        try:
            await asyncio.wait_for(self.bus.synced.wait(), max(deadline - time.monotonic(), 1.0))
        except TimeoutError:
            raise StateUnavailable("subscribed to the Redis store but could not load its state") from None
        self.spawn(self.fallback.run(self.beat, self.settle))

    async def close(self) -> None:
        await self.bus.close()
        await super().close()
        try:  # leave the replicas set now rather than when the heartbeat goes stale
            await asyncio.wait_for(self.client.zrem(self.prefix + "replicas", self.bus.origin), 1.0)
        except (*_ERRORS, TimeoutError):
            pass
        await bounded(self.client.aclose(), "client")

    async def _deliver(self, topic: str | None, data: dict | None) -> None:
        for name in ([topic] if topic is not None else list(self._listeners)):
            await self.notify(name, data)

    def _key(self, key_id: str, what: str) -> str:
        return f"{self.prefix}key:{{{key_id}}}:{what}"

    # -- limits: in Redis, or on fallback while it is away --------------------------------------
    async def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        fallback = self.fallback
        if fallback.down:
            return fallback.admit(key_id, rule)
        self._seq += 1
        keys = [self._key(key_id, "rpm"), self._key(key_id, "tpm"), self._key(key_id, "spend")]
        member = f"{self.bus.origin}:{self._seq}"
        try:
            reply = await self._admit(keys=keys, args=[rule.rpm, rule.tpm, repr(rule.budget), member])
        except _ERRORS as exc:
            fallback.enter(exc)
            return fallback.admit(key_id, rule)
        limit, retry, used, requests, tokens, spent = reply
        fallback.saw(key_id, requests, tokens, float(spent))
        if not limit:
            return None
        limit = limit.decode()
        retry = BUDGET_RETRY_AFTER if limit == "budget" else max(int(retry), 1)
        return Verdict(limit, retry, float(used))

    async def charge(self, key_id: str, tokens: int, cost: float) -> None:
        tokens, cost = max(tokens, 0), max(cost, 0.0)
        if not (tokens or cost):
            return
        if not self.fallback.down:
            try:
                await self._charge(keys=[self._key(key_id, "tpm"), self._key(key_id, "spend")],
                                   args=[tokens, repr(cost)])
                return
            except _ERRORS as exc:
                self.fallback.enter(exc)
        self.fallback.charge(key_id, tokens, cost)  # added to the shared counters when the store is back

    @guarded
    async def beat(self) -> int:
        """Say this replica is alive; how many are (the prober's call)."""
        dead_after = max(int(self.fallback.heartbeat * 3000), 1000)
        return int(await self._beat(keys=[self.prefix + "replicas"], args=[self.bus.origin, dead_after]))

    @guarded
    async def settle(self, batch: Batch) -> None:
        """Add what a batch counted to the shared counters, once per key and batch."""
        now = time.monotonic()
        for key_id in sorted(batch.keys()):
            times = batch.requests.get(key_id, ())
            args = [repr(batch.spend.get(key_id, 0.0)), f"{self.bus.origin}:{batch.id}", len(times)]
            args += [max(int((now - at) * 1000), 0) for at in times]
            for second, tokens in batch.tokens.get(key_id, ()):
                args += [max(int((now - second) * 1000), 0), tokens]
            keys = [self._key(key_id, "rpm"), self._key(key_id, "tpm"), self._key(key_id, "spend"),
                    self._key(key_id, f"settled:{batch.id}")]
            await self._settle(keys=keys, args=args)

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
        if self.fallback.down:
            return  # this replica's own circuit is open; the others find out for themselves
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
