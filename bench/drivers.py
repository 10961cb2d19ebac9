"""The Python load drivers: closed-loop non-stream load, SSE streams, idle streams held open.

Every driver is bounded twice: workers start nothing new after `duration`, and whatever is
still running `grace` seconds later is cancelled and counted as a timeout.
"""

from __future__ import annotations

import asyncio
import time

from bench.client import Conn, Endpoint, Sink, exchange
from bench.dialects import CHAT, Wire, count_events

_clock = time.perf_counter


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


class _Status(Sink):
    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    def head(self, status: int) -> None:
        self.status = status


async def _bounded(workers: list, duration: float, grace: float) -> int:
    """Run the workers; cancel what outlives duration + grace; return how many were cancelled."""
    tasks = [asyncio.ensure_future(w) for w in workers]
    _, pending = await asyncio.wait(tasks, timeout=duration + grace)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return len(pending)


async def requests(url: str, raw: bytes, concurrency: int, duration: float, grace: float = 10.0) -> dict:
    """Closed-loop non-stream load: `concurrency` connections, each one request at a time."""
    endpoint = Endpoint(url)
    latencies: list[float] = []
    errors = {"status": 0, "connect": 0, "io": 0}
    start = _clock()
    deadline = start + duration

    async def worker() -> None:
        conn: Conn | None = None
        while _clock() < deadline:
            sink = _Status()
            t0 = _clock()
            try:
                conn = await exchange(conn, endpoint, raw, sink)
            except OSError as exc:
                errors["connect" if isinstance(exc, ConnectionRefusedError) else "io"] += 1
                conn = None
                await asyncio.sleep(0.01)
                continue
            if sink.status >= 400:
                errors["status"] += 1
            latencies.append(_clock() - t0)
        if conn is not None:
            conn.close()

    timeouts = await _bounded([worker() for _ in range(concurrency)], duration, grace)
    elapsed = _clock() - start
    return {"driver": "python", "concurrency": concurrency, "duration_s": round(elapsed, 3),
            "requests": len(latencies), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": _ms(percentile(latencies, 50)), "p99_ms": _ms(percentile(latencies, 99)),
            "errors": sum(errors.values()) + timeouts, "error_kinds": {**errors, "timeout": timeouts}}


class _Totals:
    __slots__ = ("window_events", "events", "streams", "ok", "errors", "stalls", "ttfb", "max_gap", "deadline",
                 "stall_s")

    def __init__(self, deadline: float, stall_s: float) -> None:
        self.window_events = self.events = self.streams = self.ok = self.errors = self.stalls = 0
        self.ttfb: list[float] = []
        self.max_gap = 0.0
        self.deadline = deadline
        self.stall_s = stall_s


class StreamSink(Sink):
    """Counts a wire's content events as bytes arrive (no decoding), the first byte's time and long gaps."""

    __slots__ = ("totals", "t0", "first", "last", "status", "events", "done", "tail", "wire")

    def __init__(self, totals: _Totals, t0: float, wire: Wire = CHAT) -> None:
        self.totals = totals
        self.wire = wire
        self.t0 = t0
        self.first: float | None = None
        self.last = t0
        self.status = 0
        self.events = 0
        self.done = False
        self.tail = b""

    def head(self, status: int) -> None:
        self.status = status

    def body(self, data: bytes) -> None:
        now = _clock()
        totals = self.totals
        if self.first is None:
            self.first = now
            totals.ttfb.append(now - self.t0)
        else:
            gap = now - self.last
            if gap > totals.max_gap:
                totals.max_gap = gap
            if gap > totals.stall_s:
                totals.stalls += 1
        self.last = now
        count, done, self.tail = count_events(self.wire, self.tail, data)
        if done:
            self.done = True
        self.events += count
        totals.events += count
        if now <= totals.deadline:
            totals.window_events += count


async def streams(url: str, raw: bytes, concurrency: int, duration: float, *, stall_s: float = 1.0,
                  ramp: float = 0.0, grace: float = 15.0, expect_events: int = 100, wire: Wire = CHAT) -> dict:
    """Closed-loop SSE streams: `concurrency` at once, each started again when it ends.

    A stream is complete with status 200, the wire's end seen and `expect_events` content events.
    With `ramp`, the workers start evenly spread over that many seconds rather than all at once.
    """
    endpoint = Endpoint(url)
    start = _clock()
    totals = _Totals(start + duration, stall_s)

    async def worker(delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        conn: Conn | None = None
        while _clock() < totals.deadline:
            sink = StreamSink(totals, _clock(), wire)
            totals.streams += 1
            try:
                conn = await exchange(conn, endpoint, raw, sink)
            except OSError:
                conn = None
                totals.errors += 1
                await asyncio.sleep(0.01)
                continue
            if sink.status == 200 and sink.done and sink.events >= expect_events:
                totals.ok += 1
            else:
                totals.errors += 1
        if conn is not None:
            conn.close()

    step = min(ramp, duration / 2) / concurrency
    timeouts = await _bounded([worker(i * step) for i in range(concurrency)], duration, grace)
    elapsed = _clock() - start
    return {"driver": "python", "concurrency": concurrency, "duration_s": round(elapsed, 3), "ramp_s": ramp,
            "streams": totals.streams, "completed": totals.ok, "errors": totals.errors + timeouts,
            "timeouts": timeouts, "stalls": totals.stalls, "stall_threshold_ms": stall_s * 1000,
            "max_gap_ms": _ms(totals.max_gap), "events": totals.events,
            "chunks_per_s": round(totals.window_events / duration, 1),
            "ttfb_p50_ms": _ms(percentile(totals.ttfb, 50)), "ttfb_p99_ms": _ms(percentile(totals.ttfb, 99))}


class _FirstByte(StreamSink):
    __slots__ = ("arrived",)

    def __init__(self, totals: _Totals, t0: float) -> None:
        super().__init__(totals, t0)
        self.arrived = asyncio.get_running_loop().create_future()

    def body(self, data: bytes) -> None:
        super().body(data)
        if not self.arrived.done():
            self.arrived.set_result(None)


async def idle_streams(url: str, raw: bytes, count: int, sample, *, opening: int = 200,
                       hold: float = 1.0, timeout: float = 60.0) -> dict:
    """Open `count` streams whose upstream sends one chunk then idles; sample the server with them open.

    `sample()` returns the server's RSS in MB (or None). Connections are closed at the end,
    which is what makes the servers cancel their upstream calls.
    """
    endpoint = Endpoint(url)
    totals = _Totals(float("inf"), float("inf"))
    gate = asyncio.Semaphore(opening)
    conns: list[Conn] = []
    ok = 0
    rss_before = sample()

    async def one() -> None:
        nonlocal ok
        async with gate:
            sink = _FirstByte(totals, _clock())
            try:
                conn = await Conn.open(endpoint)
            except OSError:
                return
            conns.append(conn)
            ended = conn.send(raw, sink)
            ended.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.wait([sink.arrived, ended], return_when=asyncio.FIRST_COMPLETED)
            if sink.first is not None and sink.status == 200:
                ok += 1

    start = _clock()
    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    try:
        await asyncio.wait(tasks, timeout=timeout)
        open_s = _clock() - start
        await asyncio.sleep(hold)
        rss_open = sample()
        held = sum(1 for c in conns if not c.closed)
    finally:
        for task in tasks:
            task.cancel()
        for conn in conns:
            conn.close()
        await asyncio.wait(tasks, timeout=5)
    per_stream_kb = None
    if rss_before is not None and rss_open is not None and held:
        per_stream_kb = round((rss_open - rss_before) * 1024 / held, 1)
    return {"driver": "python", "requested": count, "open": held, "errors": count - ok,
            "open_s": round(open_s, 2), "rss_before_mb": _round(rss_before), "rss_open_mb": _round(rss_open),
            "per_stream_kb": per_stream_kb, "ttfb_p50_ms": _ms(percentile(totals.ttfb, 50)),
            "ttfb_p99_ms": _ms(percentile(totals.ttfb, 99))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
