"""A sink's lane: retries with jittered exponential backoff, honouring Retry-After (R36)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from proxy.config import Telemetry
from proxy.metrics.prometheus import Metrics
from proxy.telemetry import writer
from proxy.telemetry.lane import Backoff, Lane, Retryable
from proxy.telemetry.spool import Spool
from tests.telemetry.helpers import Recorder, record, until


def test_backoff_starts_at_a_second_doubles_and_is_capped():
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 0.999)
    assert low.delay(0) == 1.0 and high.delay(0) < 1.5  # first retry ≥ 1 s
    assert [low.delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 32, 32]
    assert high.delay(30) < 48  # cap 32 s plus at most half again of jitter


def test_backoff_never_retries_before_retry_after():
    backoff = Backoff(rng=lambda: 0.5)
    assert 7.0 <= backoff.delay(0, retry_after=7) <= 7.7
    assert backoff.delay(5, retry_after=0) == 1.0 * 1.05  # never sooner than the first step
    assert backoff.delay(0, retry_after=10_000) <= 900 * 1.1  # a silly Retry-After is capped


async def _lane(tmp_path, sink, metrics=None, **kw):
    spool = Spool(tmp_path)
    spool.open()
    spool.attach(sink.name)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    lane = Lane(sink, spool, pool, Telemetry(**kw), metrics)
    w = writer.Writer(spool, commit_ms=5, on_written=lambda n: None)
    w.start()
    return spool, pool, lane, w


async def _stop(spool, pool, lane, w):
    await lane.close(1)
    w.stop(5)
    spool.close()
    pool.shutdown()


async def test_a_failing_batch_is_retried_in_order_until_taken(tmp_path):
    sink = Recorder("castai", fail=3)
    metrics = Metrics()
    spool, pool, lane, w = await _lane(tmp_path, sink, batch_size=5, flush_ms=20,
                                       retry_initial=0.05, retry_max=0.2, metrics=metrics)
    for i in range(12):
        w.submit((writer.RECORD, record(i), None))
    lane.start()
    await until(lambda: len(sink.ids) == 12)
    assert sink.ids == [f"rec-{i:08d}" for i in range(12)]
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)][:3]
    assert all(gap >= 0.05 for gap in gaps)
    assert metrics.sink_retries.labels("castai", "test")._value.get() == 3
    assert metrics.records_sent.labels("castai")._value.get() == 12
    await _stop(spool, pool, lane, w)


async def test_a_sink_may_take_smaller_batches_than_the_setting(tmp_path):
    sink = Recorder("local")
    sink.batch_size = 4
    spool, pool, lane, w = await _lane(tmp_path, sink, batch_size=10, flush_ms=20)
    assert lane.batch_size == 4
    for i in range(10):
        w.submit((writer.RECORD, record(i), None))
    await until(lambda: w.pending() == 0)
    await asyncio.sleep(0.05)  # synced
    lane.start()
    await until(lambda: len(sink.ids) == 10)
    assert max(sink.batches) == 4 and sink.ids == [f"rec-{i:08d}" for i in range(10)]
    big = Recorder("big")
    big.batch_size = 1000  # never more than the setting
    assert Lane(big, spool, pool, Telemetry(batch_size=10)).batch_size == 10
    await _stop(spool, pool, lane, w)


async def test_retry_after_is_honoured(tmp_path):
    sink = Recorder("castai", fail=1, retry_after=0.4)
    spool, pool, lane, w = await _lane(tmp_path, sink, batch_size=5, flush_ms=20, retry_initial=0.01,
                                       retry_max=0.05)
    w.submit((writer.RECORD, record(0), None))
    lane.start()
    await until(lambda: sink.ids)
    assert sink.attempts[1] - sink.attempts[0] >= 0.4
    await _stop(spool, pool, lane, w)


async def test_closing_during_an_outage_leaves_the_batch_in_the_spool(tmp_path):
    sink = Recorder("castai", fail=10**6)
    spool, pool, lane, w = await _lane(tmp_path, sink, batch_size=5, flush_ms=20, retry_initial=0.01,
                                       retry_max=0.05)
    for i in range(3):
        w.submit((writer.RECORD, record(i), None))
    lane.start()
    await until(lambda: len(sink.attempts) >= 2)
    started = time.monotonic()
    await lane.close(1)
    assert time.monotonic() - started < 0.5
    w.stop(5)
    spool.close()
    pool.shutdown()
    again = Spool(tmp_path)
    assert again.open().records == 3
    again.attach("castai")
    assert len(again.read("castai", 10)[0]) == 3
    again.close()


def test_retryable_carries_its_reason():
    exc = Retryable("http_503", 2.0)
    assert (exc.reason, exc.retry_after, str(exc)) == ("http_503", 2.0, "http_503")


async def test_an_exception_that_is_not_retryable_is_retried_too(tmp_path):
    class Broken(Recorder):
        async def send(self, records):
            if not self.attempts:
                self.attempts.append(time.monotonic())
                raise ValueError("a bug in a sink")
            await super().send(records)

    sink = Broken("odd")
    spool, pool, lane, w = await _lane(tmp_path, sink, batch_size=5, flush_ms=20, retry_initial=0.01,
                                       retry_max=0.05)
    w.submit((writer.RECORD, record(0), None))
    lane.start()
    await until(lambda: sink.ids)
    await _stop(spool, pool, lane, w)
    await asyncio.sleep(0)


def test_an_undecodable_record_is_skipped_and_counted(tmp_path):
    from proxy.telemetry.lane import read_records
    from proxy.telemetry.record import encode
    from proxy.telemetry.segments import RECORD, frame, payload

    spool = Spool(tmp_path)
    spool.open()
    spool.attach("local")
    spool.append(frame(RECORD, payload(None, b"not json")) + frame(RECORD, payload(None, encode(record(1)))))
    metrics = Metrics()
    records, _ = read_records(spool, "local", 10, metrics)
    assert [r.id for r in records] == ["rec-00000001"]
    assert metrics.records_dropped.labels("unreadable")._value.get() == 1
    spool.close()


async def _offering(tmp_path, sink, **kw):
    """A lane fed as the batcher feeds it: the writer's records offered on the loop after each write;
    every read of the spool counted."""
    spool = Spool(tmp_path)
    spool.open()
    spool.attach(sink.name)
    reads = []
    real_read = spool.read

    def counted(*args, **kwargs):
        reads.append(args)
        return real_read(*args, **kwargs)

    spool.read = counted
    pool = concurrent.futures.ThreadPoolExecutor(1)
    lane = Lane(sink, spool, pool, Telemetry(**kw))
    loop = asyncio.get_running_loop()
    w = writer.Writer(spool, commit_ms=5, on_written=lambda written: loop.call_soon_threadsafe(lane.offer, written))
    w.start()
    return spool, pool, lane, w, reads


async def _local_lane_started(tmp_path):
    """A local-store-like sink (batches of 8) on a lane offered what the writer writes, started
    and past its first read, which finds the spool empty."""
    sink = Recorder("local")
    sink.batch_size = 8
    started = await _offering(tmp_path, sink, batch_size=8, flush_ms=5000)
    started[2].start()
    await until(lambda: started[4])
    return sink, started


async def test_records_just_written_reach_the_sink_from_memory_not_from_the_spool(tmp_path):
    sink, (spool, pool, lane, w, reads) = await _local_lane_started(tmp_path)
    n = 0
    for _ in range(20):  # 20 writes of 8 records, among requests' BEGIN and END frames
        items = []
        for _ in range(8):
            items += [(writer.BEGIN, f"{n:024x}", {"ts": 1.0, "route": "chat"}),
                      (writer.RECORD, record(n), f"{n:024x}")]
            n += 1
        items.append((writer.BEGIN, f"open{n:020x}", {"ts": 1.0, "route": "chat"}))  # still running
        w.submit((writer.BATCH, items))
        await until(lambda n=n: len(sink.ids) == n)
    assert sink.ids == [f"rec-{i:08d}" for i in range(160)]
    assert len(reads) <= 2, reads  # the first read, and at most one after the first write raced it
    await until(lambda: lane.position == spool.end())  # acknowledged to where a spool read would stand
    await _stop(spool, pool, lane, w)


async def test_writes_of_begin_frames_alone_do_not_send_the_lane_to_the_spool(tmp_path):
    # Under load many writes hold only BEGIN frames (no request ended within them): the first record
    # after them is still where the lane stands, so it comes from memory. Before, each such write
    # looked like a gap, and a loaded gateway's local store read every record back from disk.
    sink, (spool, pool, lane, w, reads) = await _local_lane_started(tmp_path)
    n = 0
    for round_ in range(10):
        begins = [(writer.BEGIN, f"run{round_:03d}{i:018x}", {"ts": 1.0, "route": "chat"}) for i in range(5)]
        w.submit((writer.BATCH, begins))  # requests that start, and end in a later write
        await until(lambda: w.pending() == 0)
        await asyncio.sleep(0.01)  # written on their own, before the records
        w.submit((writer.BATCH, [(writer.RECORD, record(n + i), None) for i in range(8)]))
        n += 8
        await until(lambda n=n: len(sink.ids) == n)
    assert sink.ids == [f"rec-{i:08d}" for i in range(80)]
    assert len(reads) == 1, reads  # only the first, before anything was written
    await until(lambda: lane.position == spool.end())
    await _stop(spool, pool, lane, w)


async def test_a_gap_in_memory_falls_back_to_the_spool_and_loses_nothing(tmp_path):
    # A sink down while 300 records are written: memory keeps 4 batches, the rest only the spool
    # has; the spool rolls to new segments, carrying a running request's BEGIN. Once the sink is
    # back, every record arrives once, in order, and the lane ends at the spool's end.
    sink = Recorder("castai", fail=10**6)
    spool, pool, lane, w, reads = await _offering(tmp_path, sink, batch_size=10, flush_ms=20, retry_initial=0.01,
                                                  retry_max=0.02)
    spool.segment_bytes = 16 * 1024
    lane.start()
    w.submit((writer.BEGIN, "open" + "0" * 20, {"ts": 1.0, "route": "chat"}))
    for i in range(300):
        w.submit((writer.RECORD, record(i), None))
        if i % 25 == 0:
            await asyncio.sleep(0.005)
    await until(lambda: w.pending() == 0)
    await asyncio.sleep(0.05)  # the last write offered
    assert lane.failing and not lane._memory  # a lane whose sink is down keeps nothing in memory
    sink.fail = 0
    await until(lambda: len(sink.ids) == 300, timeout=20)
    assert sink.ids == [f"rec-{i:08d}" for i in range(300)]
    assert len(reads) > 1  # it did read the spool for what memory no longer held
    await until(lambda: lane.position == spool.end())
    await _stop(spool, pool, lane, w)
