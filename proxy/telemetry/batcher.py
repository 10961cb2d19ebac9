"""The batcher: the request path hands over records without waiting; each sink gets them in batches.

    put(record) ──▶ hand-over (≤ 2 ms) ──▶ spool (disk; the writer thread syncs: group commit) ──▶
                    lane per sink (N records or T ms) ──▶ sink.send

Every record is on disk moments (~2 ms) after `put` (a kill -9 loses nothing handed over; a power cut
at most the `commit_ms` window), and leaves the spool only once every sink acknowledged it. Each
sink reads at its own pace from its own cursor, so one sink down never stalls another. A start
resends what the last process left unacknowledged, and reports requests that were in flight at a
crash as `aborted_unknown` (`proxy.telemetry.journal`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib

import structlog

from proxy.config import Telemetry
from proxy.telemetry import journal, writer
from proxy.telemetry.journal import CURRENT, Slot
from proxy.telemetry.lane import Lane, Sink
from proxy.telemetry.record import UsageRecord
from proxy.telemetry.spool import Recovery, Spool

log = structlog.get_logger("proxy.telemetry")
# How long an item may wait for its handover to the writer: R33 loses no record of a request that
# finished 200 ms before a kill -9, and finds every request in flight 10 ms before it.
HOLD_S = 0.002


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Batcher:
    def __init__(self, sinks: list[Sink], spool: Spool, cfg: Telemetry = Telemetry(), *, metrics=None,
                 cluster_id: str | None = None) -> None:
        self.sinks = sinks
        self.spool = spool
        self.queue_size = cfg.queue_size
        self.reject = cfg.when_full == "reject"
        self.metrics = metrics
        self.cluster_id = cluster_id
        self.writer = writer.Writer(spool, commit_ms=cfg.commit_ms, queue_size=cfg.queue_size,
                                    drop_oldest=not self.reject, metrics=metrics, on_written=self._from_writer)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="usage-spool-read")
        self.lanes = [Lane(sink, spool, self._pool, cfg, metrics) for sink in sinks]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._held: list[tuple] = []  # items handed to the writer in one go
        self._later = False  # a handover is due within HOLD_S
        # The records written, handed to the lanes once they make the smallest lane batch (a lane
        # wakes only then): not a loop wake-up per write. Written on the writer's thread only.
        self._written: list[writer.Written] = []
        self._notify_at = min((lane.batch_size for lane in self.lanes), default=1)

    def _submit(self, item: tuple) -> None:
        """Queue `item` for the writer's next handover, at most HOLD_S away: one writer wake-up
        per HOLD_S, not per loop turn (a wake-up costs a thread switch on the requests' core).
        A request that ends within it goes over with its BEGIN, which is then never written."""
        self._held.append(item)
        if self._loop is None:
            self._handover()
        elif not self._later:  # one timer at a time
            self._later = True
            self._loop.call_later(HOLD_S, self._timed_handover)

    def _timed_handover(self) -> None:
        self._later = False
        self._handover()

    def _handover(self) -> None:
        if self._held:
            held, self._held = self._held, []
            # Written here, on the loop, unless the writer's thread must take them (proxy.telemetry.writer)
            if not (self._running and self.writer.write_now(held)):
                self.writer.submit((writer.BATCH, held))

    # -- the request path: never waits, never raises ------------------------------------
    def put(self, record: UsageRecord) -> None:
        slot = CURRENT.get()
        if slot is not None:
            slot.closed = True
        if self.writer.pending() + len(self._held) >= self.queue_size:
            if self.metrics is not None:
                self.metrics.records_dropped.labels("queue_full").inc()
            return
        self._submit((writer.RECORD, record, slot.id if slot is not None else None))

    def begin(self, info) -> Slot:
        slot = Slot()
        self._submit((writer.BEGIN, slot.id, info))
        return slot

    def end(self, slot: Slot) -> None:
        if not slot.closed:
            slot.closed = True
            self._submit((writer.END, slot.id))

    @property
    def refusing(self) -> bool:
        """With `whenFull: reject`: True while a new record could not be kept."""
        return self.reject and (self.spool.bytes >= self.spool.max_bytes or self.writer.failing)

    def __len__(self) -> int:
        return self.writer.pending() + len(self._held)

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        recovery = await loop.run_in_executor(self._pool, self.spool.open)
        for lane in self.lanes:
            self.spool.attach(lane.name)
        self.writer.start()
        self._running = True
        self._recovered(recovery)
        for lane in self.lanes:
            lane.start()

    def _recovered(self, recovery: Recovery) -> None:
        begun = recovery.open_begins()
        for slot, body in begun.items():
            try:
                record = journal.aborted(slot, body, self.cluster_id)
            except Exception:  # a journal entry from another version: not worth a crash loop
                log.exception("journal_entry_unreadable", slot=slot)
                continue
            self.writer.submit((writer.RECORD, record, slot))
        if recovery.damaged and self.metrics is not None:
            self.metrics.spool_corrupt.inc(recovery.damaged)
            self.metrics.records_dropped.labels("spool_corrupt").inc(recovery.damaged)
        if recovery.records or recovery.damaged or begun:
            log.info("spool_recovered", records=recovery.records, damaged=recovery.damaged,
                     aborted_unknown=len(begun), spool_dir=str(self.spool.dir))
        if recovery.damaged:
            log.error("spool_damaged", damaged=recovery.damaged,
                      detail="damaged spool frames were skipped; every intact record was kept")

    def _from_writer(self, written: list[writer.Written]) -> None:
        """On the writer's thread: wake the loop only once the lanes could have a full batch."""
        self._written += written
        if len(self._written) < self._notify_at:
            return
        written, self._written = self._written, []
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._to_lanes, written)

    def _to_lanes(self, written: list[writer.Written]) -> None:
        for lane in self.lanes:
            lane.offer(written)

    async def _barrier(self) -> None:
        """Wait until everything handed over so far is written and synced."""
        future = self._loop.create_future()
        loop = self._loop
        self._handover()
        self.writer.submit((writer.BARRIER, lambda: loop.call_soon_threadsafe(_resolve, future)))
        await future

    async def flush(self) -> None:
        """Write what is queued, then let every sink take it (a failing sink keeps it spooled)."""
        if not self._running:
            return
        await self._barrier()
        target = self.spool.end()
        await asyncio.gather(*(lane.caught_up(target) for lane in self.lanes))

    async def close(self, timeout: float = 3.0) -> None:
        """Flush for up to `timeout` s; what a sink did not take stays in the spool for the next start."""
        if not self._running:
            self._pool.shutdown(wait=False)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("usage_flush_incomplete", detail="unsent records stay in the spool for the next start")
        remaining = max(deadline - loop.time(), 0.1)
        await asyncio.gather(*(lane.close(remaining) for lane in self.lanes))
        self._running = False
        self._handover()
        await loop.run_in_executor(None, self.writer.stop, 5.0)
        await loop.run_in_executor(self._pool, self.spool.close)
        self._pool.shutdown(wait=True)
