"""The embedded store: one process's memory, with budgets and spend saved to SQLite.

For a sidecar or a single replica. Requests-per-minute and token-per-minute windows live in
this process, so with `listen.workers > 1` each worker counts its own: use the Redis store to
share them. Budgets and spend live in SQLite files every worker of the gateway opens: spend is
added to the file once a second (and at stop), never on the request path, and a few times a
second each worker looks whether another one changed a file (`WATCH_SECONDS`); when one did,
it reloads budgets and spend, and announces the change on the topic watching that file
(`watch`), as the Redis store announces another replica's change. A registration, deletion or
budget change made through one worker thus serves on every worker within a second.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time

import structlog

from proxy.state.base import Rule, Store, Verdict
from proxy.state.sqlite import SharedFile, StateDB

log = structlog.get_logger("proxy.state")

WINDOW = 60.0  # seconds: RPM and TPM are counted over the last minute, sliding
BUDGET_RETRY_AFTER = 3600  # an exhausted budget does not refill by itself: a long hint
WATCH_SECONDS = 0.25  # how often to look for another worker's change; well inside the 1 s promise
_FLUSH_EVERY = 4  # looks: spend reaches the file once a second


def retry_in(seconds: float) -> int:
    return max(math.ceil(seconds), 1)


class EmbeddedStore(Store):
    def __init__(self, db_path: str | None = None, cache_url: str | None = None, clock=time.monotonic) -> None:
        super().__init__()
        self.cache_url = cache_url
        self._clock = clock
        self._db = StateDB(db_path) if db_path else None
        self._requests: dict[str, collections.deque[float]] = {}  # admitted request times
        self._tokens: dict[str, collections.deque[list[int]]] = {}  # [second, tokens] buckets
        self._spend: dict[str, float] = self._db.spend() if self._db else {}  # the file's total + _unsaved
        self._unsaved: dict[str, float] = {}  # spend counted here, not yet added to the file
        self._budgets: dict[str, float] = self._db.budgets() if self._db else {}
        self._watched: list[tuple[str, SharedFile]] = []

    def watch(self, topic: str, file: SharedFile) -> None:
        """Announce `topic` when another process (another worker) committed to `file`."""
        self._watched.append((topic, file))

    async def start(self) -> None:
        if self._db is not None or self._watched:
            self.spawn(self._watch_loop())

    async def close(self) -> None:
        await super().close()
        if self._db is not None:
            self._flush()
            self._db.close()
            self._db = None

    async def _watch_loop(self) -> None:
        looks = 0
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            looks += 1
            try:
                if looks % _FLUSH_EVERY == 0:
                    self._flush()
                await self.look()
            except Exception:  # a bad row or a locked file must not end the watch for good
                log.exception("state_watch_failed")

    async def look(self) -> None:
        """Reload and announce what another worker changed since the last look."""
        if self._db is not None and self._db.changed_elsewhere():
            self._reload()
            await self.notify("budgets", None)
        for topic, file in self._watched:
            if file.changed_elsewhere():
                await self.notify(topic, None)

    def _reload(self) -> None:
        self._budgets = self._db.budgets()
        spend = self._db.spend()
        for key_id, usd in self._unsaved.items():
            spend[key_id] = spend.get(key_id, 0.0) + usd
        self._spend = spend

    def _flush(self) -> None:
        if self._unsaved and self._db is not None:
            unsaved, self._unsaved = self._unsaved, {}
            try:
                self._db.add_spend(unsaved)
            except BaseException:  # a locked or full file: kept for the next flush, never dropped
                for key_id, usd in unsaved.items():
                    self._unsaved[key_id] = self._unsaved.get(key_id, 0.0) + usd
                raise

    # -- limits -------------------------------------------------------------------------------
    async def admit(self, key_id: str, rule: Rule) -> Verdict | None:
        return self.check(key_id, rule)

    def check(self, key_id: str, rule: Rule) -> Verdict | None:
        """The whole check in one synchronous step: nothing else runs in between."""
        now = self._clock()
        if rule.budget > 0:
            spent = self._spend.get(key_id, 0.0)
            if spent >= rule.budget:
                return Verdict("budget", BUDGET_RETRY_AFTER, spent)
        if rule.tpm > 0:
            used, oldest = self._tokens_used(key_id, int(now))
            if used >= rule.tpm:
                return Verdict("tpm", retry_in(oldest + WINDOW - now), used)
        if rule.rpm > 0:
            log = self._requests.get(key_id)
            if log is None:
                log = self._requests[key_id] = collections.deque()
            while log and log[0] <= now - WINDOW:
                log.popleft()
            if len(log) >= rule.rpm:
                return Verdict("rpm", retry_in(log[0] + WINDOW - now), len(log))
            log.append(now)
        return None

    def _tokens_used(self, key_id: str, second: int) -> tuple[int, int]:
        buckets = self._tokens.get(key_id)
        if not buckets:
            return 0, second
        while buckets and buckets[0][0] <= second - WINDOW:
            buckets.popleft()
        return sum(b[1] for b in buckets), (buckets[0][0] if buckets else second)

    def seed(self, key_id: str, at: float, requests: int, tokens: int, spent: float) -> None:
        """Start a key's windows and spend from counts read elsewhere (the shared store's, last
        seen at `at`): the requests and tokens count as made at `at`, so they leave the window
        no earlier than the real ones did."""
        if requests > 0:
            self._requests[key_id] = collections.deque([at] * requests)
        if tokens > 0:
            self._tokens[key_id] = collections.deque([[int(at), tokens]])
        self._spend[key_id] = spent

    async def charge(self, key_id: str, tokens: int, cost: float) -> None:
        self.charge_now(key_id, tokens, cost)

    def charge_now(self, key_id: str, tokens: int, cost: float) -> None:
        if tokens > 0:
            second = int(self._clock())
            buckets = self._tokens.get(key_id)
            if buckets is None:
                buckets = self._tokens[key_id] = collections.deque()
            if buckets and buckets[-1][0] == second:
                buckets[-1][1] += tokens
            else:
                buckets.append([second, tokens])
        if cost > 0:
            self._spend[key_id] = self._spend.get(key_id, 0.0) + cost
            self._unsaved[key_id] = self._unsaved.get(key_id, 0.0) + cost

    async def spend(self, key_id: str) -> float:
        return self._spend.get(key_id, 0.0)

    async def set_spend(self, key_id: str, usd: float) -> None:
        self._spend[key_id] = usd
        self._unsaved.pop(key_id, None)  # counted before the reset: gone with it
        if self._db is not None:  # at once, for the other workers to reload
            self._db.set_spend(key_id, usd)

    async def budgets(self) -> dict[str, float]:
        return dict(self._budgets)

    async def set_budget(self, key_id: str, limit: float | None) -> None:
        if limit is None:
            self._budgets.pop(key_id, None)
        else:
            self._budgets[key_id] = limit
        if self._db is not None:
            self._db.set_budget(key_id, limit)
        await self.notify("budgets", {"keyId": key_id})
