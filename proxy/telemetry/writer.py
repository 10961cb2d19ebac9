"""The spool's writer: appends on the request path's thread, fsyncs and rolls on its own.

`write(items)` is called once per event-loop turn with that turn's items: it encodes them and
appends them to the active segment at once, one `pwrite` into the page cache (so a kill -9 loses
nothing written; the page cache outlives the process). Handing the items to a thread instead
cost a thread wake-up per loop turn, ~25 µs of CPU per request at c32 on the gateway's one core
(bench). Everything that may block stays on the writer's thread: the `fdatasync` of the group
commit, at most `commit_ms` after the first unsynced write (a power cut loses at most that
window), rolling to the next segment (its file created and its name synced before appends switch
to it), and deleting the oldest segments at the cap.

When the disk refuses a write, the items wait in memory and the thread retries each second; up
to `queue_size` records are held, beyond that the oldest are dropped and counted. `submit(item)`
hands items to the thread instead (recovered records, barriers, and everything from callers on
other threads).
"""

from __future__ import annotations

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
BATCH = "M"  # (BATCH, [item, …]): one loop turn's items in one hand-over
BARRIER = "F"  # (BARRIER, callback): called once everything queued before it is written and synced
STOP = "S"  # (STOP,)
WAKE = "W"  # (WAKE,): `write` left work for the thread (a sync, a roll, the cap, a retry)

_RETRY_S = 1.0


class Writer:
    def __init__(self, spool: Spool, *, commit_ms: int = 50, queue_size: int = 100_000, drop_oldest: bool = True,
                 metrics=None, on_written: Callable[[int], None] | None = None) -> None:
        self.spool = spool
        self.commit_s = commit_ms / 1000
        self.queue_size = queue_size
        self.drop_oldest = drop_oldest
        self.metrics = metrics
        if metrics is not None:  # read at scrape time, not set at every write
            metrics.spool_bytes.set_function(lambda: spool.bytes)
        self.on_written = on_written  # from the thread's own writes; `write` returns its count instead
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.failing = False
        self._encode_one = msgspec.json.Encoder().encode
        # Held while encoding and appending, by `write` and by the thread: the segment being
        # appended to, the backlog and the open BEGINs change only under it.
        self._lock = threading.Lock()
        self._backlog: list[tuple[bytes, int]] = []  # (frames, records) not yet written
        self._backlog_records = 0
        self._open: dict[str, bytes] = {}  # slot → BEGIN frame of a request still running
        self._unsynced = False  # appended since the thread's last sync began
        self._woken = False  # the thread was sent a WAKE and has not gone idle since
        self._thread = threading.Thread(target=self._run, name="usage-spool", daemon=True)
        self._submitted = 0  # items handed over (written by the submitting thread only)
        self._taken = 0  # items taken off the queue (written by this writer's thread only)

    def start(self) -> None:
        self._thread.start()

    def write(self, items: list[tuple]) -> int:
        """Encode and append `items` (RECORD, BEGIN, END) now, on the caller's thread; returns the
        records written. While the disk refuses writes they join the backlog the thread retries."""
        with self._lock:
            retrying = bool(self._backlog)
            self._encode(items)
            written = 0
            if not retrying and self._backlog:
                written = self._write()
            # Once told, the thread keeps watching until it has nothing left to do (see _run)
            wake = not self._woken and self._wants_thread()
            if wake:
                self._woken = True
        if wake:
            self.queue.put((WAKE,))
        return written

    def _wants_thread(self) -> bool:
        spool = self.spool
        return (self._unsynced or bool(self._backlog) or spool.wants_roll()
                or (self.drop_oldest and spool.bytes > spool.max_bytes))

    def submit(self, item: tuple) -> None:
        self._submitted += len(item[1]) if item[0] == BATCH else 1
        self.queue.put(item)

    def pending(self) -> int:
        return max(self._submitted - self._taken, 0) + self._backlog_records

    def stop(self, timeout: float | None = None) -> bool:
        """Write what is queued, sync, end the thread; False if it did not end in time."""
        self.queue.put((STOP,))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        last_sync, stopping = time.monotonic(), False
        while not stopping:
            with self._lock:
                timeout = self._timeout(last_sync)
                if timeout is None:  # nothing to watch for: the next `write` that leaves work wakes us
                    self._woken = False
            items = self._take(timeout)
            barriers = [item[1] for item in items if item[0] == BARRIER]
            stopping = any(item[0] == STOP for item in items)
            with self._lock:
                self._encode(items)
                written = self._write() if self._backlog else 0
            if written and self.on_written is not None:
                self.on_written(written)
            self._housekeeping()
            now = time.monotonic()
            if self._unsynced and (barriers or stopping or now - last_sync >= self.commit_s) and self._sync():
                last_sync = now
            for callback in barriers:
                callback()

    def _timeout(self, last_sync: float) -> float | None:
        if self._backlog:
            return _RETRY_S
        if self._unsynced:
            return max(last_sync + self.commit_s - time.monotonic(), 0.0)
        if self.spool.wants_roll() or (self.drop_oldest and self.spool.bytes > self.spool.max_bytes):
            return _RETRY_S  # a roll or a drop that could not be done: retried
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
        self._taken += sum(1 for item in flat if item[0] not in (STOP, WAKE))
        return flat

    def _encode(self, items: list[tuple]) -> None:
        """Frame RECORD, BEGIN and END items into the backlog (other items are the thread's)."""
        encode, out, records = self._encode_one, [], 0
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
                out.append(segments.frame(segments.RECORD, segments.payload(slot, encode(record))))
                if slot is not None:
                    self._open.pop(slot, None)
                records += 1
            elif tag == BEGIN:
                framed = segments.frame(segments.BEGIN, segments.payload(item[1], encode(item[2])))
                self._open[item[1]] = framed
                out.append(framed)
            elif tag == END:
                if self._open.pop(item[1], None) is not None:
                    out.append(segments.frame(segments.END, segments.payload(item[1])))
        if out:
            self._backlog.append((b"".join(out), records))
            self._backlog_records += records

    def _write(self) -> int:
        """Append the backlog (under the lock); the records written, 0 when the disk refused."""
        data = b"".join(chunk for chunk, _ in self._backlog)
        try:
            self.spool.append(data)
        except OSError as exc:
            self._failed(exc)
            return 0
        written = self._backlog_records
        self._backlog, self._backlog_records = [], 0
        self._unsynced = True
        if self.failing:
            self.failing = False
            log.warning("spool_writable_again")
        return written

    def _failed(self, exc: OSError) -> None:
        if self.metrics is not None:
            self.metrics.spool_write_errors.inc()
        if not self.failing:
            self.failing = True
            log.error("spool_write_failed", error=exc.strerror or type(exc).__name__,
                      detail="usage records are held in memory and written when the disk accepts them")
        while self._backlog_records > self.queue_size and len(self._backlog) > 1:
            _, lost = self._backlog.pop(0)
            self._backlog_records -= lost
            self._dropped("queue_full", lost)

    def _housekeeping(self) -> None:
        """Roll to the next segment and drop the oldest at the cap (the thread, not under the lock)."""
        spool = self.spool
        if spool.wants_roll():
            try:
                prepared = spool.prepare()  # the new file and its name on disk: slow, so not under the lock
            except OSError as exc:
                prepared = None
                with self._lock:
                    self._failed(exc)
            if prepared is not None:
                with self._lock:
                    old = spool.switch(prepared)
                    self._unsynced = True
                    carried = b"".join(self._open.values())  # running requests' BEGINs move along
                    try:
                        if carried:
                            spool.append(carried)
                    except OSError as exc:
                        self._failed(exc)
                try:
                    spool.retire(old)
                except OSError as exc:
                    with self._lock:
                        self._failed(exc)
        if self.drop_oldest and spool.bytes > spool.max_bytes:
            lost = sum(spool.drop_oldest().values())
            if lost:
                self._dropped("spool_full", lost)

    def _dropped(self, reason: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.records_dropped.labels(reason).inc(count)
        log.error("usage_records_dropped", reason=reason, records=count)

    def _sync(self) -> bool:
        with self._lock:  # what is appended from here on waits for the next sync
            self._unsynced = False
        try:
            self.spool.sync()
        except OSError as exc:
            with self._lock:
                self._unsynced = True
                self._failed(exc)
            return False
        return True
