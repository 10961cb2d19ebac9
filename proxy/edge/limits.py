"""Admission: fast 503s before any work when the gateway is full (a burst past capacity, memory running out).

Two caps, both off at 0: requests in flight on the data plane (`limits.maxInFlight`; no queue:
a caller past the cap is told to come back rather than wait behind the others) and resident memory
(`limits.maxRssMib`, a high-water mark: set it below the container's limit). RSS is read from
/proc/self/statm with one `pread` at most every 100 ms. Between two reads, requests admitted
count with three times their declared body (the body, its upstream copy, the send buffer), so a
burst of large prompts cannot all pass on one stale reading; that count is dropped one reading
later, when their memory shows in RSS. While above the mark the gateway also asks the allocator
to hand freed memory back, at most once a second, so admission resumes when the load is gone.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import gc
import os
import time

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.config import Limits
from proxy.errors import Unavailable

RSS_EVERY = 0.1  # seconds between two reads of the resident size
RELIEF_EVERY = 1.0  # seconds between two attempts to give memory back
RETRY_AFTER = 1
BODY_FACTOR = 3  # memory a request holds per byte of its body: the body, the upstream copy, buffers

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RssReader:
    """The process's resident size in bytes, from one kept-open /proc file (about 1 µs a read)."""

    def __init__(self, path: str = "/proc/self/statm") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:  # not Linux: the watermark cannot be read, so it never sheds
            self._fd = None

    def __call__(self) -> int:
        if self._fd is None:
            return 0
        fields = os.pread(self._fd, 128, 0).split()
        return int(fields[1]) * _PAGE

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def relieve() -> None:
    """Collect cycles and return free heap pages to the OS, so RSS can fall below the mark."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


class Admission:
    """`admit()` raises `Unavailable` (503, Retry-After) when a cap is reached; else costs a compare."""

    __slots__ = ("metrics", "bodies", "max_in_flight", "max_rss", "rss", "pending", "_previous", "_read", "_next_read",
                 "_next_relief", "rejected")

    def __init__(self, limits: Limits, metrics, read_rss=None) -> None:
        self.metrics = metrics
        self.max_in_flight = limits.max_in_flight
        self.max_rss = limits.max_rss_mib * 1024 * 1024
        self._read = read_rss or RssReader()
        self.rss = 0
        self.pending = 0  # body bytes admitted since the last reading (× BODY_FACTOR)…
        self._previous = 0  # …and in the one before it
        self._next_read = 0.0
        self._next_relief = 0.0
        self.rejected = {"in_flight": 0, "memory": 0}
        self.bodies = BodyBuffer(limits.max_body_buffer, limits.body_buffer_wait)

    def admit(self, body_bytes: int | None = None) -> None:
        """Called with this request already counted in `metrics.in_flight`."""
        if self.max_in_flight and self.metrics.in_flight > self.max_in_flight:
            self.rejected["in_flight"] += 1
            raise Unavailable(f"the gateway is serving its maximum of {self.max_in_flight} requests; "
                              "retry shortly", retry_after=RETRY_AFTER, code="overloaded")
        if self.max_rss:
            cost = (body_bytes or 0) * BODY_FACTOR
            if self._projected() + cost > self.max_rss:
                self.rejected["memory"] += 1
                raise Unavailable("the gateway is low on memory; retry shortly", retry_after=RETRY_AFTER,
                                  code="overloaded")
            self.pending += cost

    def _projected(self) -> int:
        now = time.monotonic()
        if now >= self._next_read:
            self._next_read = now + RSS_EVERY
            self._previous, self.pending = self.pending, 0
            self.rss = self._read()
            if self.rss > self.max_rss and now >= self._next_relief:
                self._next_relief = now + RELIEF_EVERY
                relieve()
                self.rss = self._read()
        return self.rss + self.pending + self._previous

    def collector(self) -> Collector:
        return _Collector(self)


class _Collector(Collector):
    """Admission refusals, resident memory and live asyncio tasks (the soak test watches the last two for leaks)."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self):
        rejected = CounterMetricFamily("aigw_admission_rejected", "Requests refused with 503 before any work",
                                       labels=("reason",))
        for reason, count in self.admission.rejected.items():
            rejected.add_metric((reason,), count)
        rejected.add_metric(("body_buffer",), self.admission.bodies.rejected)
        yield rejected
        yield GaugeMetricFamily("aigw_resident_memory_bytes", "Resident set size of this process",
                                value=self.admission._read())
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the loop
            tasks = 0
        yield GaugeMetricFamily("aigw_asyncio_tasks", "Live asyncio tasks", value=tasks)


class BodyBuffer:
    """A budget for the bytes of request bodies being read at once (`limits.maxBodyBuffer`): many slow large uploads must not exhaust memory.

    A request reserves its declared length, or `maxBodyBytes` when it declares none (chunked),
    before it reads its body, and gives it back when the read ends. Past the budget requests wait
    in arrival order for up to `limits.bodyBufferWait` seconds, then get a fast 503; while one
    waits, its connection's read buffer fills and the server stops reading it, so 50 oversized
    chunked bodies are read one budget at a time instead of all at once. A body larger than the
    whole budget is read alone. The common case costs a compare and an add.
    """

    __slots__ = ("capacity", "wait", "used", "_waiters", "rejected")

    def __init__(self, capacity: int, wait: float) -> None:
        self.capacity = capacity
        self.wait = wait
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        self.rejected = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes now if they fit (and nobody waits before), else False."""
        if not self.capacity:
            return True
        if not self._waiters and (self.used + size <= self.capacity or not self.used):
            self.used += size
            return True
        return False

    async def reserve(self, size: int) -> None:
        """Wait for `size` bytes in arrival order; 503 after `wait` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except TimeoutError:
            self._abandon(entry)
            self.rejected += 1
            error = Unavailable("the gateway is reading its maximum of request bodies; retry shortly",
                                retry_after=RETRY_AFTER, code="overloaded")
            error.closes = True  # the body stays unread
            raise error from None
        except BaseException:  # cancelled: the client went away
            self._abandon(entry)
            raise

    def _abandon(self, entry: tuple[int, asyncio.Future]) -> None:
        size, waiter = entry
        if waiter.done() and not waiter.cancelled():
            self.release(size)  # granted just as the wait ended: hand it on
            return
        try:
            self._waiters.remove(entry)
        except ValueError:
            pass
        self._wake()

    def release(self, size: int) -> None:
        if self.capacity:
            self.used -= size
            self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            size, waiter = waiters[0]
            if self.used and self.used + size > self.capacity:
                return
            waiters.popleft()
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


ADMISSION = web.AppKey("admission", Admission)


def install(app: web.Application, limits: Limits, metrics) -> Admission:
    """Put an `Admission` on the app and its numbers on /metrics."""
    admission = app[ADMISSION] = Admission(limits, metrics)
    metrics.registry.register(admission.collector())
    return admission
