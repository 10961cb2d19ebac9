"""Three gateway replicas in this process, each on its own loopback port with its own data
directory, sharing one store URL; and the load the fault tests send them."""

from __future__ import annotations

import asyncio
import os
import time

from proxy.pipeline.auth import digest
from tests.conftest import ADMIN_KEY

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "gpt-4o-mini"], "isHosted": True}
# 1,000 USD per million tokens both ways: a mock answer (8 + 16 tokens) costs $0.024, so a single
# request lost or counted twice moves the spend by more than two cents
PRICES = {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}
COST = 24 * 1000.0 / 1e6
ADMIN = {"X-API-Key": ADMIN_KEY}
HEARTBEAT = 0.3


def key(name: str, **limits) -> dict:
    return {"id": name, "sha256": digest(f"key-{name}"), **limits}


async def fleet(gateway, tmp_path, store_url: str, keys: list[dict], outage: str = "local", n: int = 3):
    """`n` replicas on `store_url`, each having seen the others' heartbeats."""
    replicas = []
    for i in range(n):
        config = {"dataDir": str(tmp_path / f"replica{i}"), "providers": [MOCK], "prices": PRICES,
                  "auth": {"adminKey": ADMIN_KEY, "keys": keys}, "storeUrl": store_url,
                  "secretKey": "replicas-share-this-secret", "logLevel": "warning",
                  "state": {"outage": outage, "heartbeatSeconds": HEARTBEAT}}
        replicas.append(await gateway(config))
    deadline = time.monotonic() + 5
    while any(r.gw.state.fallback.alive < n for r in replicas):
        assert time.monotonic() < deadline, "the replicas did not see each other's heartbeats"
        await asyncio.sleep(0.05)
    return replicas


def prefix() -> str:
    return f"t{os.urandom(4).hex()}:"


async def chat(replica, name: str, model: str = "gpt-4o-mini"):
    """(status, Retry-After) of one chat request; status 0 when the connection failed."""
    try:
        async with replica.post("/v1/chat/completions", headers={"X-API-Key": f"key-{name}"},
                                json={"model": model, "messages": [{"role": "user", "content": "hi"}]}) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After")
    except OSError:
        return 0, None


async def burst(replicas, name: str, count: int) -> list[int]:
    """`count` concurrent requests spread over the replicas; their statuses."""
    results = await asyncio.gather(*(chat(replicas[i % len(replicas)], name) for i in range(count)))
    return [status for status, _ in results]


class Load:
    """Requests at a steady rate spread over the replicas, each logged as (sent at, status, Retry-After)."""

    def __init__(self, replicas, name: str, rate: float) -> None:
        self.replicas, self.name, self.rate = replicas, name, rate
        self.log: list[tuple[float, int, str | None]] = []
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    async def _one(self, replica) -> None:
        sent = time.monotonic()
        status, retry_after = await chat(replica, self.name)
        self.log.append((sent, status, retry_after))

    async def _run(self) -> None:
        began, i = time.monotonic(), 0
        while True:
            task = asyncio.ensure_future(self._one(self.replicas[i % len(self.replicas)]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            i += 1
            await asyncio.sleep(max(began + i / self.rate - time.monotonic(), 0))

    def start(self) -> Load:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> list[tuple[float, int, str | None]]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._pending)
        return sorted(self.log)


async def recovered(replicas, seconds: float = 10) -> float:
    """Wait until every replica counts in the store again with nothing left to reconcile."""
    began = time.monotonic()
    while any(r.gw.state.fallback.down or r.gw.state.fallback.unsettled for r in replicas):
        assert time.monotonic() - began < seconds, "a replica did not find the store again"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def spend_of_records(replicas, name: str) -> float:
    total = 0.0
    for replica in replicas:
        total += sum(r.cost_usd for r in await replica.records() if r.api_key_id == name)
    return total
