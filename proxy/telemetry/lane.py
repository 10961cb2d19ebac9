"""One sink's delivery: its own task, its own cursor in the spool, its own retries.

A sink is any object with a `name` and `async send(records)`, and optionally a `batch_size`
smaller than `telemetry.batchSize`. `send` returns once the batch is
handled (accepted, or refused for good and dead-lettered by the sink); it raises when the batch
must be sent again: `Retryable` (with the server's Retry-After, when it gave one) or any other
exception. The batch stays in the spool until `send` returns, so a crash resends it: record ids
make that harmless. Retries back off exponentially with jitter from `initial` (1 s by default,
so at most one attempt per second per batch during an outage), capped at `cap` plus half again
of jitter, and never sooner than Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from typing import Protocol

import msgspec
import structlog

from proxy.config import Telemetry
from proxy.telemetry.record import UsageRecord
from proxy.telemetry.spool import Pos, Spool

log = structlog.get_logger("proxy.telemetry")
_decode = msgspec.json.Decoder(UsageRecord).decode


class Sink(Protocol):
    name: str

    async def send(self, records: list[UsageRecord]) -> None: ...


class Retryable(Exception):
    """The batch was not taken this time; `reason` is a short label for metrics and logs."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Backoff:
    def __init__(self, initial: float = 1.0, cap: float = 32.0, *, max_retry_after: float = 900.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.cap = cap
        self.max_retry_after = max_retry_after
        self.rng = rng

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt` + 1 (attempt counts from 0)."""
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), self.initial) * (1 + self.rng() / 10)
        base = min(self.initial * 2 ** min(attempt, 32), self.cap)
        return base * (1 + self.rng() / 2)


def read_records(spool: Spool, name: str, limit: int, metrics=None,
                 start: Pos | None = None) -> tuple[list[UsageRecord], Pos]:
    """Read and decode (on the spool's reader thread); an undecodable record is skipped, counted."""
    payloads, end = spool.read(name, limit, start)
    records = []
    for payload in payloads:
        try:
            records.append(_decode(payload))
        except msgspec.DecodeError:
            log.error("spool_record_unreadable", sink=name, bytes=len(payload))
            if metrics is not None:
                metrics.records_dropped.labels("unreadable").inc()
    return records, end


def _ack_and_read(spool: Spool, name: str, end: Pos, limit: int, metrics=None) -> tuple[list[UsageRecord], Pos]:
    spool.ack(name, end)
    return read_records(spool, name, limit, metrics)


class Lane:
    def __init__(self, sink: Sink, spool: Spool, pool, cfg: Telemetry = Telemetry(), metrics=None) -> None:
        self.sink = sink
        self.name = sink.name
        self.spool = spool
        self.pool = pool  # the spool's reader thread
        # A sink may take smaller batches than `telemetry.batchSize` (the local store does: see it)
        self.batch_size = min(getattr(sink, "batch_size", None) or cfg.batch_size, cfg.batch_size)
        self.flush_s = cfg.flush_ms / 1000
        self.backoff = Backoff(cfg.retry_initial, cfg.retry_max)
        self.metrics = metrics
        self.fresh = 0  # records written since this lane last read
        self.urgent = False  # a flush is waiting: send a short batch at once
        self.failing = False
        self.position: Pos = (0, 0)
        # Records the writer just wrote, (segment, start, end, record) (proxy.telemetry.writer.Written):
        # a read that starts where they do takes them from here, not from the spool, saving a trip
        # to the reader thread and a decode per record on the core the requests use. Bounded: a
        # lane that falls behind (a sink down) drops the oldest and reads the spool when it is back.
        self._memory: collections.deque = collections.deque()
        self._memory_cap = 4 * self.batch_size
        self._next: Pos | None = None  # where this lane's next read starts, once known
        self._offered: Pos | None = None  # the end of the last record offered
        self.wake = asyncio.Event()
        self.progress = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"usage-sink-{self.name}")

    def offer(self, written: list) -> None:
        """Records the writer wrote (on the loop, in spool order): kept for the next read, and
        a wake-up once they make a batch."""
        memory = self._memory
        self._offered = written[-1][0], written[-1][2]
        if self.failing:  # it will read the spool once its sink is back: memory would only grow
            memory.clear()
        else:
            memory.extend(written)
            for _ in range(len(memory) - self._memory_cap):
                memory.popleft()
        self.fresh += len(written)
        if self.fresh >= self.batch_size:
            self.wake.set()

    def _take(self, start: Pos | None, limit: int) -> tuple[list[UsageRecord], Pos] | None:
        """Up to `limit` records from memory that a spool read from `start` would return, and the
        position after them; None unless memory holds the records that follow `start`."""
        memory = self._memory
        if start is None:
            return None
        while memory and (memory[0][0], memory[0][2]) <= start:  # read from the spool already
            memory.popleft()
        if not memory or (memory[0][0], memory[0][1]) != start:  # a gap: a roll, a drop, a slow lane
            return None
        records, at = [], start
        while memory and len(records) < limit and (memory[0][0], memory[0][1]) == at:
            seq, _, end, record = memory.popleft()
            records.append(record)
            at = (seq, end)
        return records, at

    async def _read(self, limit: int, start: Pos | None = None) -> tuple[list[UsageRecord], Pos]:
        """The next records: from `start` (the end of a batch held unsent) or after the last one
        read; from memory when it holds them, else from the spool on its reader thread."""
        self.fresh = 0
        taken = self._take(start or self._next, limit)
        if taken is None:
            taken = await asyncio.get_running_loop().run_in_executor(
                self.pool, read_records, self.spool, self.name, limit, self.metrics, start)
        self._next = taken[1]
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        partial_due = loop.time() + self.flush_s  # a batch short of N waits T after the last one
        following = None  # the next batch, read along with the last acknowledgement
        while not self._stop.is_set():
            if following is None:
                following = await self._read(self.batch_size)
            (records, end), following = following, None
            full = len(records) >= self.batch_size
            if records and not full and not self.urgent and loop.time() < partial_due:
                await self._idle(partial_due - loop.time())
                if not self._stop.is_set():  # keep what was read, decoded; read on from its end
                    more, end = await self._read(self.batch_size - len(records), end)
                    following = (records + more, end)
                continue
            if records and not await self._deliver(records):
                return
            if end > self.position:
                following = await self._ack(end, read_on=full and not self._stop.is_set())
                self.position = end
            self.progress.set()
            if not full:
                partial_due = loop.time() + self.flush_s
                await self._idle(self.flush_s)

    async def _ack(self, end: Pos, *, read_on: bool) -> tuple[list[UsageRecord], Pos] | None:
        """Acknowledge up to `end`; after a full batch, take the next: from memory when it holds
        it, else read in the same trip to the spool's thread (a trip costs a thread switch each
        way, on the core the requests use)."""
        loop = asyncio.get_running_loop()
        following = self._take(end, self.batch_size) if read_on else None
        if read_on and following is None and end == self._offered:
            # Everything offered is taken: what more the spool has is less than a batch (the
            # batcher offers whole batches), so it waits for the next offer or the flush timer.
            following = [], end
        if following is not None or not read_on:
            await loop.run_in_executor(self.pool, self.spool.ack, self.name, end)
            if following is not None:
                self.fresh = 0
                self._next = following[1]
            return following
        self.fresh = 0
        following = await loop.run_in_executor(self.pool, _ack_and_read, self.spool, self.name, end,
                                               self.batch_size, self.metrics)
        self._next = following[1]
        return following

    async def _idle(self, seconds: float) -> None:
        """Until N records were written, a flush is asked for, or `seconds` pass."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass
        self.wake.clear()

    async def _deliver(self, records: list[UsageRecord]) -> bool:
        """Send until the sink takes the batch; False when stopping first."""
        attempt = 0
        while not self._stop.is_set():
            try:
                await self.sink.send(records)
            except Exception as exc:  # any failure of a sink is retried, never lets a record go
                delay = self.backoff.delay(attempt, getattr(exc, "retry_after", None))
                self._failed(exc, attempt, delay)
                attempt += 1
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    continue
                return False
            self._succeeded(len(records), attempt)
            return True
        return False

    def _failed(self, exc: Exception, attempt: int, delay: float) -> None:
        reason = exc.reason if isinstance(exc, Retryable) else type(exc).__name__
        if self.metrics is not None:
            self.metrics.sink_retries.labels(self.name, reason).inc()
        if attempt == 0 and not self.failing:
            log.warning("sink_failing", sink=self.name, reason=reason, retry_in_s=round(delay, 2),
                        detail="records stay in the spool until the sink takes them")
        if not isinstance(exc, Retryable):
            log.error("sink_error", sink=self.name, error=type(exc).__name__, exc_info=exc)
        self.failing = True
        self.progress.set()

    def _succeeded(self, count: int, attempts: int) -> None:
        if self.metrics is not None:
            self.metrics.records_sent.labels(self.name).inc(count)
        if self.failing:
            self.failing = False
            log.info("sink_recovered", sink=self.name, failed_attempts=attempts)

    async def caught_up(self, target: Pos) -> bool:
        """Wait until this sink acknowledged everything before `target`; False if it is failing."""
        self.urgent = True
        try:
            while self.position < target:
                if self.failing or self._task is None or self._task.done():
                    return False
                self.progress.clear()
                self.wake.set()
                await self.progress.wait()
            return True
        finally:
            self.urgent = False

    async def close(self, timeout: float) -> None:
        """Stop; a batch being sent gets `timeout` seconds, then it stays in the spool."""
        self._stop.set()
        self.wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
