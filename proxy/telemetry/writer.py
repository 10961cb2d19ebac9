"""The spool's writer: its thread, and the event loop's own writes.

Items are written at once, so a kill -9 loses nothing already handed over (the page cache
outlives the process), and synced at most `commit_ms` after the first unsynced write (group
commit: a power cut loses at most that window). When the disk refuses writes, items wait in
memory up to `queue_size` records; beyond that the oldest are dropped and counted.

Two ways in. The batcher's hand-over (every 2 ms under load) writes on the event loop itself
(`write_now`): one `pwrite` to the page cache, ~1 µs a KB. Handed to the thread instead, each
hand-over woke it, and the wake-up, the switch of the GIL and the thread's cold caches cost more
CPU on the requests' core than the write (measured: 5 % of a loaded gateway's CPU per request).
Whatever may block for long stays on the thread: the fsync, a segment's roll, dropping the
oldest segments, retries while the disk refuses, and every item `submit` queues. The loop's
write is skipped, and its items queued instead (in order behind the ones queued earlier), while
the thread holds the spool, has items not yet written, or the disk is failing: the loop never
waits for the thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

import msgspec
import structlog

from proxy.telemetry import segments
from proxy.telemetry.spool import Spool

log = structlog.get_logger("proxy.telemetry")

# Items on the queue: (tag, …)
RECORD = "R"  # (RECORD, UsageRecord, slot | None)
BEGIN = "B"  # (BEGIN, slot, info: dict)
END = "E"  # (END, slot)
BATCH = "M"  # (BATCH, [item, …]): the items of one hand-over (up to 2 ms of them: proxy.telemetry.batcher)
BARRIER = "F"  # (BARRIER, callback): called once everything queued before it is written and synced
STOP = "S"  # (STOP,)
WAKE = "W"  # (WAKE,): the loop wrote: sync within the commit window, roll or retry (not counted as handed over)

# What `on_written` gets for each record written: (segment, start, end, record). A read of the spool
# from (segment, start) would return this record first, and would stand at (segment, end) after it
# (the last record of a write ends where the write ends: only BEGIN and END frames follow it). The
# lanes take the records from these instead of reading back and decoding what was just written.
Written = tuple[int, int, int, object]

_RETRY_S = 1.0


class Writer:
    def __init__(self, spool: Spool, *, commit_ms: int = 50, queue_size: int = 100_000, drop_oldest: bool = True,
                 metrics=None, on_written: Callable[[list[Written]], None] | None = None) -> None:
        self.spool = spool
        self.commit_s = commit_ms / 1000
        self.queue_size = queue_size
        self.drop_oldest = drop_oldest
        self.metrics = metrics
        if metrics is not None:  # read at scrape time, not set at every write
            metrics.spool_bytes.set_function(lambda: spool.bytes)
        self.on_written = on_written
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.failing = False
        # (frames, [(where each record's frame ends in them, the record), …]) not yet written
        self._backlog: list[tuple[bytes, list[tuple[int, object]]]] = []
        self._backlog_records = 0
        self._open: dict[str, bytes] = {}  # slot → BEGIN frame of a request still running
        self._thread = threading.Thread(target=self._run, name="usage-spool", daemon=True)
        self._after_records: tuple[int, int] | None = None  # the end of the last write with a record in it
        self._submitted = 0  # items handed over (written by the submitting thread only)
        self._taken = 0  # items taken off the queue and written (by this writer's thread, under _lock)
        # Held while the spool is written, by the thread or by `write_now`; never while it syncs.
        self._lock = threading.Lock()
        self._dirty = False  # written and not yet synced (under _lock)
        self._maintain = False  # the loop's write found a roll or the cap due: the thread does it
        self._stopped = False
        self._encode_here = msgspec.json.Encoder().encode  # the loop's (an encoder is not shared across threads)

    def start(self) -> None:
        if self.on_written is not None:
            with contextlib.suppress(KeyError):  # a spool not opened yet: the first write starts the chain
                self._after_records = self.spool.end()  # where a lane reading it all stands
        self._thread.start()

    def submit(self, item: tuple) -> None:
        self._submitted += len(item[1]) if item[0] == BATCH else 1
        self.queue.put(item)

    def pending(self) -> int:
        return max(self._submitted - self._taken, 0) + self._backlog_records

    def write_now(self, items: list[tuple]) -> bool:
        """Write `items` (BEGIN, RECORD and END items of one hand-over) on the calling thread, at
        once; False, with nothing done, when they must go through `submit`: the thread is busy
        with the spool or has items not yet written (these go after them), the disk is failing,
        or the writer stopped."""
        if self._stopped or self.failing or not self.spool.writable or not self._lock.acquire(blocking=False):
            return False
        wake = False
        try:
            if self._backlog or self._submitted != self._taken:
                return False
            self._encode(items, self._encode_here, [])
            first = not self._dirty
            wrote = bool(self._backlog) and self._write(maintain=False)
            spool = self.spool
            wake = (wrote and first) or bool(self._backlog)  # the thread syncs it, or retries it
            if not self._maintain and (spool.wants_roll() or spool.bytes > spool.max_bytes):
                self._maintain = wake = True
        finally:
            self._lock.release()
        if wake:
            self.queue.put((WAKE,))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Write what is queued, sync, end the thread; False if it did not end in time."""
        self._stopped = True
        self.queue.put((STOP,))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        encode = msgspec.json.Encoder().encode
        last_sync, stopping = time.monotonic(), False
        while not stopping:
            items = self._take(self._timeout(last_sync))
            barriers: list[Callable[[], None]] = []
            with self._lock:
                self._taken += sum(1 for item in items if item[0] not in (STOP, WAKE))
                stopping = self._encode(items, encode, barriers)
                if self._backlog:
                    self._write()
                elif self._maintain:
                    self._after_write([])
                self._maintain = False
                now = time.monotonic()
                sync = self._dirty and (barriers or stopping or now - last_sync >= self.commit_s)
                if sync:
                    self._dirty = False  # a write while this sync runs marks it again
            if sync:
                if self._sync():
                    last_sync = now
                else:
                    with self._lock:
                        self._dirty = True
            for callback in barriers:
                callback()

    def _timeout(self, last_sync: float) -> float | None:
        if self._backlog:
            return _RETRY_S
        if self._dirty:
            return max(last_sync + self.commit_s - time.monotonic(), 0.0)
        return None

    def _take(self, timeout: float | None) -> list[tuple]:
        try:
            items = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        get = self.queue.get_nowait
        try:
            while len(items) < 10_000:
                items.append(get())
        except queue.Empty:
            pass
        flat = []
        for item in items:
            if item[0] == BATCH:
                flat += item[1]
            else:
                flat.append(item)
        return flat

    def _encode(self, items: list[tuple], encode, barriers: list) -> bool:
        out, records, stopping, at = [], [], False, 0
        # A request that began and ended within these items needs no BEGIN on disk: its record
        # (or its END) is written in the same append.
        ended = {item[2] if item[0] == RECORD else item[1] for item in items
                 if item[0] == END or (item[0] == RECORD and item[2] is not None)}
        for item in items:
            tag = item[0]
            if tag == BEGIN and item[1] in ended:
                continue
            if tag == RECORD:
                _, record, slot = item
                framed = segments.frame(segments.RECORD, segments.payload(slot, encode(record)))
                out.append(framed)
                at += len(framed)
                records.append((at, record))
                if slot is not None:
                    self._open.pop(slot, None)
            elif tag == BEGIN:
                framed = segments.frame(segments.BEGIN, segments.payload(item[1], encode(item[2])))
                self._open[item[1]] = framed
                out.append(framed)
                at += len(framed)
            elif tag == END:
                if self._open.pop(item[1], None) is not None:
                    framed = segments.frame(segments.END, segments.payload(item[1]))
                    out.append(framed)
                    at += len(framed)
            elif tag == BARRIER:
                barriers.append(item[1])
            elif tag == STOP:
                stopping = True
        if out:
            self._backlog.append((b"".join(out), records))
            self._backlog_records += len(records)
        return stopping

    def _write(self, maintain: bool = True) -> bool:
        """Append the backlog (under _lock); `maintain`: roll and cap the spool too (the thread)."""
        backlog = self._backlog
        data = b"".join(chunk for chunk, _ in backlog)
        try:
            self.spool.append(data)
        except OSError as exc:
            self._failed(exc)
            return False
        self._dirty = True
        written = self._placed(backlog, len(data)) if self.on_written is not None else []
        self._backlog, self._backlog_records = [], 0
        if self.failing:
            self.failing = False
            log.warning("spool_writable_again")
        if maintain:
            self._after_write(written)
        elif written:
            self.on_written(written)
        return True

    def _placed(self, backlog: list, size: int) -> list[Written]:
        """Where each record of the write just made lies in the spool (read before a roll moves on)."""
        seq, end = self.spool.end()
        base = end - size
        placed, previous = [], base
        after = self._after_records
        if after is not None and after[0] == seq and after[1] <= base:
            # Only BEGIN and END frames lie between the last record written and this write, so a
            # read from there returns this write's first record: a lane stands there, and takes
            # it from memory rather than read the spool for want of a record-less write's frames.
            previous = after[1]
        for chunk, records in backlog:
            for stop, record in records:
                placed.append((seq, previous, base + stop, record))
                previous = base + stop
            base += len(chunk)
        if placed:
            last = placed[-1]
            placed[-1] = (seq, last[1], end, last[3])  # only BEGIN and END frames follow it
            self._after_records = (seq, end)
        return placed

    def _failed(self, exc: OSError) -> None:
        if self.metrics is not None:
            self.metrics.spool_write_errors.inc()
        if not self.failing:
            self.failing = True
            log.error("spool_write_failed", error=exc.strerror or type(exc).__name__,
                      detail="usage records are held in memory and written when the disk accepts them")
        while self._backlog_records > self.queue_size and len(self._backlog) > 1:
            _, lost = self._backlog.pop(0)
            self._backlog_records -= len(lost)
            self._dropped("queue_full", len(lost))

    def _after_write(self, written: list[Written]) -> None:
        spool = self.spool
        if spool.wants_roll():
            try:
                spool.roll(b"".join(self._open.values()))  # running requests' BEGINs move along
            except OSError as exc:
                self._failed(exc)
        if self.drop_oldest and spool.bytes > spool.max_bytes:
            lost = sum(spool.drop_oldest().values())
            if lost:
                self._dropped("spool_full", lost)
        if written:
            self.on_written(written)

    def _dropped(self, reason: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.records_dropped.labels(reason).inc(count)
        log.error("usage_records_dropped", reason=reason, records=count)

    def _sync(self) -> bool:
        try:
            self.spool.sync()
        except OSError as exc:
            self._failed(exc)
            return False
        return True
