"""Serving while the shared store is away (`state.outage`), and finding it again.

    local   (the default) each replica counts alone. RPM and TPM limits are shared out between
            the replicas last seen alive (their heartbeats say how many; 1 when unknown), and
            each key's window starts from the share of the shared counts this replica saw last.
            A budget is checked against the spend last read from the store plus what was
            spent here since.
    refuse  a request of a key with limits gets 503 with Retry-After until the store is back.

In both modes spend is never dropped: a charge that cannot be written is counted here, and when
the store answers again everything counted here (spend, admitted requests, tokens) is added to
the shared counters once. Each batch carries an id the store remembers, so a batch sent again
after its reply was lost is not applied twice.

While away, requests do not touch the store at all (a partitioned store would cost each of them
a connect timeout). One prober per replica pings it, with exponential backoff and full jitter,
so that replicas that lost it together do not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.state.base import Rule, StateUnavailable, Verdict
from proxy.state.memory import WINDOW, EmbeddedStore

log = structlog.get_logger("proxy.state")

BACKOFF_BASE = 0.05  # seconds: the first reconnection attempt comes within this…
BACKOFF_CAP = 2.0  # …and none waits longer than this, so a store back is found within ~2 s


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)], which spreads replicas out."""
    return random.uniform(0.0, min(cap, base * 2 ** min(attempt, 30)))


class Seen(NamedTuple):
    """A key's shared counts as the store last reported them to this replica."""

    at: float  # monotonic time of the report
    requests: int  # requests in the RPM window
    tokens: int  # tokens in the TPM window
    spent: float  # USD


class Batch:
    """What was counted here while away, to add to the shared counters once."""

    __slots__ = ("id", "spend", "requests", "tokens")

    def __init__(self, batch_id: str) -> None:
        self.id = batch_id
        self.spend: dict[str, float] = {}
        self.requests: dict[str, collections.deque[float]] = {}  # admission times (monotonic)
        self.tokens: dict[str, collections.deque[list]] = {}  # [monotonic second, tokens]

    def keys(self) -> set[str]:
        return set(self.spend) | set(self.requests) | set(self.tokens)


def _share(limit: int, alive: int) -> int:
    return max(limit // alive, 1) if limit else 0


def _prune(times: collections.deque, now: float, first=lambda entry: entry) -> None:
    while times and first(times[0]) <= now - WINDOW:
        times.popleft()


class Local:
    """One outage's counting: an embedded store for the checks and the batch to reconcile."""

    def __init__(self, batch: Batch, alive: int, clock: Callable[[], float]) -> None:
        self.batch = batch
        self.alive = alive
        self.clock = clock
        self.counts = EmbeddedStore(clock=clock)
        self.seeded: set[str] = set()

    def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        verdict = self.counts.check(key_id, Rule(_share(rule.rpm, self.alive), _share(rule.tpm, self.alive),
                                                 rule.budget))
        if verdict is None and rule.rpm:
            now = self.clock()
            times = self.batch.requests.setdefault(key_id, collections.deque())
            _prune(times, now)
            times.append(now)
        return verdict

    def charge(self, key_id: str, tokens: int, cost: float) -> None:
        self.counts.charge_now(key_id, tokens, cost)
        batch = self.batch
        if cost > 0:
            batch.spend[key_id] = batch.spend.get(key_id, 0.0) + cost
        if tokens > 0:
            now = self.clock()
            buckets = batch.tokens.setdefault(key_id, collections.deque())
            _prune(buckets, now, lambda bucket: bucket[0])
            if buckets and buckets[-1][0] == int(now):
                buckets[-1][1] += tokens
            else:
                buckets.append([int(now), tokens])


class Fallback:
    """The store's state (shared or on fallback), the local counting and the prober.

    `probe()` reaches the store and returns how many replicas are alive; `settle(batch)` adds a
    batch to the shared counters (idempotent per batch id). Both raise StateUnavailable.
    """

    def __init__(self, policy: str, origin: str, heartbeat: float = 2.0, clock=time.monotonic) -> None:
        self.policy = policy
        self.heartbeat = heartbeat
        self.clock = clock
        self.down = False
        self.alive = 1
        self.seen: dict[str, Seen] = {}
        self.local: Local | None = None
        self.unsettled: list[Batch] = []  # taken off a Local, not yet confirmed by the store
        self.switches = {"fallback": 0, "shared": 0}
        self._ids = (f"{origin}-{n}" for n in itertools.count(1))
        self._since = 0.0
        self._wake = asyncio.Event()

    # -- the request path ---------------------------------------------------------------------
    def saw(self, key_id: str, requests: int, tokens: int, spent: float) -> None:
        now = self.clock()
        old = self.seen.get(key_id)
        # replies to concurrent requests arrive in any order: within a second, the highest count
        # is the latest; after that the window may really have shrunk
        if old is None or requests >= old.requests or now - old.at > 1.0:
            self.seen[key_id] = Seen(now, requests, tokens, spent)

    def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        if self.policy == "refuse":
            raise StateUnavailable("the shared store is away and state.outage is refuse")
        local = self._local()
        if key_id not in local.seeded:
            self._seed(local, key_id)
        return local.admit(key_id, rule)

    def charge(self, key_id: str, tokens: int, cost: float) -> None:
        local = self._local()
        if key_id not in local.seeded:
            self._seed(local, key_id)
        local.charge(key_id, tokens, cost)

    def _local(self) -> Local:
        if self.local is None:
            self.local = Local(Batch(next(self._ids)), self.alive, self.clock)
        return self.local

    def _seed(self, local: Local, key_id: str) -> None:
        """A key's local windows start from its share of the shared counts seen last, plus what
        this replica counted in earlier outages and has not yet seen the store take."""
        local.seeded.add(key_id)
        now = self.clock()
        spent, requests, tokens = 0.0, 0, 0
        for batch in self.unsettled:
            spent += batch.spend.get(key_id, 0.0)
            requests += sum(1 for at in batch.requests.get(key_id, ()) if at > now - WINDOW)
            tokens += sum(n for second, n in batch.tokens.get(key_id, ()) if second > now - WINDOW)
        seen = self.seen.get(key_id)
        if seen is not None:
            now, spent = seen.at, spent + seen.spent
            requests += seen.requests // local.alive
            tokens += seen.tokens // local.alive
        local.counts.seed(key_id, now, requests, tokens, spent)

    # -- switching ----------------------------------------------------------------------------
    def enter(self, error: BaseException) -> None:
        """The store failed: serve on fallback until the prober finds it again (logged once)."""
        if self.down:
            return
        self.down = True
        self._since = self.clock()
        self.switches["fallback"] += 1
        log.warning("state_fallback_entered", policy=self.policy, replicas_alive=self.alive,
                    error=f"{type(error).__name__}: {error}"[:300])
        self._wake.set()

    async def _leave(self, settle: Callable[[Batch], Awaitable[None]]) -> None:
        if self.local is not None:
            self.unsettled.append(self.local.batch)
            self.local = None
        self.down = False  # from here on requests count in the store again
        self.switches["shared"] += 1
        log.warning("state_fallback_left", policy=self.policy, seconds=round(self.clock() - self._since, 3))
        for batch in list(self.unsettled):
            await settle(batch)  # raises: back on fallback, the batch kept for the next try
            self.unsettled.remove(batch)
            log.info("state_fallback_reconciled", batch=batch.id, keys=len(batch.keys()))

    # -- the prober ---------------------------------------------------------------------------
    async def run(self, probe: Callable[[], Awaitable[int]], settle: Callable[[Batch], Awaitable[None]]) -> None:
        """Heartbeat every `heartbeat` seconds while shared; reconnect with jittered backoff while not."""
        attempt = 0
        while True:
            try:
                self.alive = max(await probe(), 1)
                if self.down:
                    await self._leave(settle)
                attempt = 0
            except StateUnavailable as exc:
                self.enter(exc)
                attempt += 1
            except Exception as exc:  # a dead prober would leave this replica on fallback for good
                log.exception("state_prober_failed")
                self.enter(exc)
                attempt += 1
            self._wake.clear()
            delay = backoff(attempt) if self.down else self.heartbeat
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    def collector(self) -> Collector:
        return _Collector(self)


class _Collector(Collector):
    def __init__(self, fallback: Fallback) -> None:
        self.fallback = fallback

    def collect(self):
        fallback = self.fallback
        switches = CounterMetricFamily("aigw_state_fallback_switches",
                                       "Switches of the shared store between shared counting and the "
                                       "state.outage fallback, by the side switched to", labels=("to",))
        for side, count in fallback.switches.items():
            switches.add_metric((side,), count)
        yield switches
        yield GaugeMetricFamily("aigw_state_on_fallback", "1 while the shared store is away and this replica "
                                "serves on its state.outage fallback", value=int(fallback.down))
        yield GaugeMetricFamily("aigw_state_replicas_alive", "Replicas whose heartbeat the shared store "
                                "showed last", value=fallback.alive)
