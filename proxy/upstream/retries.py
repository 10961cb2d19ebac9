"""How much retrying the gateway allows itself (a retry storm, docs/reliability.md B).

- `Budget`: retries (every attempt after a request's first, failover included) may be at most
  `ratio` of the requests seen in the last `window` seconds plus `minPerSecond` a second, so a
  full outage costs the providers at most 1.2 × the client rate + 3/s instead of `maxAttempts` ×.
  The first attempt is never refused: a request always reaches a provider. A retry to a provider
  with a clean record (no failure since its last success) is counted but never refused: failing
  over to a healthy provider is what retries are for; retrying into failing ones is the storm.
- `Cooldowns`: a provider that answered 429 with a Retry-After is not called again for that
  model before that time has passed, by any request (providers limit per model).
- `retry_after()` / `backoff()`: the wait a 429 asks for, made safe (finite, bounded), and the
  exponential backoff used when it gave none that can be read.
"""

from __future__ import annotations

import math
import random
import time

from proxy.config import RetryBudget

SLOTS = 10  # the window slides in tenths
MAX_RETRY_AFTER = 86_400.0  # a day: longer is a provider's mistake, not a plan


class Budget:
    __slots__ = ("ratio", "floor", "slot_seconds", "requests", "retries", "denied", "_slot", "_clock")

    def __init__(self, cfg: RetryBudget, clock=time.monotonic) -> None:
        self.ratio = cfg.ratio
        self.floor = cfg.min_per_second * cfg.window
        self.slot_seconds = cfg.window / SLOTS
        self.requests = [0] * SLOTS
        self.retries = [0] * SLOTS
        self.denied = 0
        self._clock = clock
        self._slot = int(clock() / self.slot_seconds)

    def _current(self) -> int:
        slot = int(self._clock() / self.slot_seconds)
        if slot != self._slot:
            for passed in range(self._slot + 1, self._slot + 1 + min(slot - self._slot, SLOTS)):
                self.requests[passed % SLOTS] = 0
                self.retries[passed % SLOTS] = 0
            self._slot = slot
        return slot % SLOTS

    def request(self) -> None:
        """A client request reached dispatch (its first attempt needs no budget)."""
        self.requests[self._current()] += 1

    def try_retry(self, free: bool = False) -> bool:
        """Take one retry from the budget; False when it is spent (never for a `free` one)."""
        slot = self._current()
        if not free and sum(self.retries) >= self.ratio * sum(self.requests) + self.floor:
            self.denied += 1
            return False
        self.retries[slot] += 1
        return True


class Cooldowns:
    __slots__ = ("until", "_clock")

    def __init__(self, clock=time.monotonic) -> None:
        self.until: dict[tuple[str, str], float] = {}  # (provider, model) -> when it may be called
        self._clock = clock

    def hold(self, key: tuple[str, str], seconds: float) -> None:
        self.until[key] = max(self.until.get(key, 0.0), self._clock() + seconds)

    def remaining(self, key: tuple[str, str]) -> float:
        """Seconds before (provider, model) may be called again; 0 when it may be called now."""
        until = self.until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self.until[key]
            return 0.0
        return left


def retry_after(value: float | None) -> float | None:
    """A Retry-After a provider sent, or None when there was none or it makes no sense."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER)


def backoff(waits: int, base: float = 1.0) -> float:
    """The wait before retry number `waits + 1` when the provider gave no usable Retry-After."""
    return base * 2 ** min(waits, 16) * random.uniform(1.0, 1.25)


def header_seconds(seconds: float) -> int:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    return max(math.ceil(seconds), 1)
