"""The batcher: the request path appends; a background task flushes to every sink.

A sink is any object with ``async def send(records: list[UsageRecord]) -> None``. Sinks are
independent: one failing or slow does not stall another. Durable spooling of what a sink
could not take is the spool's job (a later layer); here a failed batch is counted.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

import structlog

from proxy.telemetry.record import UsageRecord

log = structlog.get_logger("proxy.telemetry")


class Sink(Protocol):
    name: str

    async def send(self, records: list[UsageRecord]) -> None: ...


class Batcher:
    def __init__(self, sinks: list[Sink], *, batch_size: int = 500, flush_ms: int = 1000,
                 queue_size: int = 100_000, metrics=None) -> None:
        self.sinks = sinks
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.queue_size = queue_size
        self.metrics = metrics
        self._queue: collections.deque[UsageRecord] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def put(self, record: UsageRecord) -> None:
        """Enqueue without waiting; never raises into the request path."""
        queue = self._queue
        if len(queue) >= self.queue_size:
            queue.popleft()
            if self.metrics is not None:
                self.metrics.records_dropped.labels("queue_full").inc()
        queue.append(record)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-batcher")

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            await asyncio.gather(*(self._send(sink, batch) for sink in self.sinks))

    async def _send(self, sink: Sink, batch: list[UsageRecord]) -> None:
        try:
            await sink.send(batch)
        except Exception as exc:  # a sink's failure must not stop the others or the loop
            log.error("sink_failed", sink=sink.name, records=len(batch), error=type(exc).__name__)
            if self.metrics is not None:
                self.metrics.records_dropped.labels(f"sink_{sink.name}").inc(len(batch))
            return
        if self.metrics is not None:
            self.metrics.records_sent.labels(sink.name).inc(len(batch))

    async def close(self) -> None:
        """Stop the loop and flush what is queued."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
