"""The one interface to state that replicas may share (docs/deploy.md).

    Store                       what a gateway reads and writes beyond its own request
    ├── EmbeddedStore           this process: memory, budgets and spend in SQLite (proxy.state.memory)
    └── RedisStore              every replica: Redis, changes announced on pub/sub (proxy.state.redis)

Limits are checked and counted by the store in one atomic step (a Lua script in Redis), so
replicas never race a read-modify-write. Topics announce changes made elsewhere:
``providers`` (admin registrations), ``budgets`` (admin budget limits), ``circuit`` (a provider
whose circuit a replica opened). A callback given ``None`` must reload everything it mirrors:
the store lost its connection and may have missed messages.
"""

from __future__ import annotations

import abc
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import structlog


def _aiocache_without_redis() -> None:
    """Load aiocache without redis-py. aiocache registers its Redis backend by importing redis-py
    whenever it is installed (about 6 MB of RSS); the embedded store never talks to Redis, and
    proxy.state.redis imports aiocache's Redis backend itself when STORE_URL asks for it."""
    if "aiocache" in sys.modules or "redis" in sys.modules:
        return
    sys.modules["redis"] = None  # type: ignore[assignment]  # makes `import redis` fail
    try:
        import aiocache  # noqa: F401
    finally:
        del sys.modules["redis"]


_aiocache_without_redis()

from aiocache import SimpleMemoryCache  # noqa: E402
from aiocache.base import BaseCache  # noqa: E402
from aiocache.serializers import BaseSerializer  # noqa: E402

# one server, Sentinel, Cluster; each with TLS (proxy.state.clients)
REDIS_SCHEMES = ("redis://", "rediss://", "redis+sentinel://", "rediss+sentinel://", "redis+cluster://",
                 "rediss+cluster://")

log = structlog.get_logger("proxy.state")

Callback = Callable[[dict | None], Awaitable[None]]


class StateUnavailable(ConnectionError):
    """The shared store cannot be reached (a ConnectionError: at start, the CLI says so and exits)."""


class Rule(NamedTuple):
    """A caller key's limits; 0 means none for that dimension."""

    rpm: int = 0
    tpm: int = 0
    budget: float = 0.0


class Verdict(NamedTuple):
    """Why a request was refused: the limit (`rpm`, `tpm` or `budget`) and when to retry."""

    limit: str
    retry_after: int
    used: float


class ProviderTable(Protocol):
    """Admin registrations as rows of (item JSON, sealed key)."""

    async def rows(self) -> list[tuple[bytes, str | None]]: ...

    async def put(self, rows: list[tuple[str, bytes, str | None]]) -> None: ...

    async def delete(self, name: str) -> bool: ...


class BytesSerializer(BaseSerializer):
    """Values are bytes already (msgspec-encoded by their owner): stored and read as they are."""

    DEFAULT_ENCODING = None

    def dumps(self, value: bytes) -> bytes:
        return value

    def loads(self, value: bytes | None) -> bytes | None:
        return value


CLOSE_S = 2.0


async def bounded(step: Awaitable, what: str, seconds: float = CLOSE_S) -> None:
    """Await one step of closing a connection for at most `seconds`, then leave it: a Redis that
    stopped answering must not hold a drain, or a test's teardown, for ever. (`asyncio.wait`, not
    `wait_for`: that waits on for a step that does not end when cancelled.)"""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("state_close_timed_out", step=what, seconds=seconds)
        return
    task.result()


async def close_cache(cache: BaseCache) -> None:
    """Close an aiocache cache (its Redis client with `aclose`, which aiocache 0.12 does not use)."""
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "aclose"):
        await bounded(client.aclose(), "cache")
    else:
        await bounded(cache.close(), "cache")


class Store(abc.ABC):
    shared = False  # True when other replicas see the same state
    providers: ProviderTable | None = None  # None: the registry keeps its own SQLite file
    cache_url: str | None = None

    def __init__(self) -> None:
        self._listeners: dict[str, list[Callback]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Connect; called once the event loop runs."""
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro) -> None:
        """Run `coro` in the background, keeping a reference until it ends; failures are logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("state_write_failed", error=str(task.exception()))

    # -- change notification ------------------------------------------------------------------
    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call `callback(data)` when another replica announces a change on `topic`."""
        self._listeners.setdefault(topic, []).append(callback)

    async def notify(self, topic: str, data: dict | None) -> None:
        for callback in self._listeners.get(topic, ()):
            await callback(data)

    # -- per-key limits -----------------------------------------------------------------------
    @abc.abstractmethod
    async def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        """Check budget, TPM and RPM, and count the request when admitted; None = admitted."""

    @abc.abstractmethod
    async def charge(self, key_id: str, tokens: int, cost: float) -> None:
        """Count a finished request's tokens (TPM window) and cost (spend)."""

    @abc.abstractmethod
    async def spend(self, key_id: str) -> float: ...

    @abc.abstractmethod
    async def set_spend(self, key_id: str, usd: float) -> None: ...

    @abc.abstractmethod
    async def budgets(self) -> dict[str, float]:
        """Budget limits set through the admin API, by key id (0 = explicitly none)."""

    @abc.abstractmethod
    async def set_budget(self, key_id: str, limit: float | None) -> None:
        """Set (or with None remove) a key's budget limit and announce it."""

    # -- provider circuits --------------------------------------------------------------------
    async def open_circuit(self, name: str, seconds: float) -> None:
        """Tell the other replicas a provider's circuit is open for `seconds`."""
        return None

    async def circuits(self) -> dict[str, float]:
        """Circuits open anywhere: provider name → seconds left."""
        return {}

    # -- caches -------------------------------------------------------------------------------
    def cache(self, namespace: str) -> BaseCache:
        """An aiocache cache of bytes values under `namespace`: in Redis when `cache_url` is a
        Redis URL (CACHE_URL, else the Redis store's own), else in this process's memory."""
        url = self.cache_url
        if url and url.startswith(REDIS_SCHEMES):
            from proxy.state.clients import cache_backend

            return cache_backend(url, namespace, BytesSerializer())
        return SimpleMemoryCache(serializer=BytesSerializer(), namespace=namespace)
