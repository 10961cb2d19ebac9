"""The spool writer: written at once, synced in groups, holding on when the disk refuses (R37)."""

from __future__ import annotations

import errno
import os
import threading
import time

from proxy.metrics.prometheus import Metrics
from proxy.telemetry import writer
from proxy.telemetry.spool import Spool
from tests.telemetry.helpers import record


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.002)


def _spool(tmp_path, **kw) -> Spool:
    spool = Spool(tmp_path, **kw)
    spool.open()
    spool.attach("local")
    return spool


def _refusing(spool: Spool) -> dict:
    """Make the spool's appends fail with ENOSPC while the returned switch's "on" is true."""
    refuse = {"on": True}
    real_append = spool.append

    def append(data):
        if refuse["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_append(data)

    spool.append = append
    return refuse


def _barrier(w: writer.Writer) -> None:
    done = threading.Event()
    w.submit((writer.BARRIER, done.set))
    assert done.wait(5)


def test_a_record_is_in_the_file_at_once_and_synced_within_the_commit_window(tmp_path):
    spool = _spool(tmp_path)
    syncs = []
    real_sync = spool.sync
    spool.sync = lambda: (syncs.append(time.monotonic()), real_sync())
    w = writer.Writer(spool, commit_ms=50)
    w.start()
    submitted = time.monotonic()
    w.submit((writer.RECORD, record(1), None))
    _wait(lambda: spool.bytes > 0, timeout=0.05)  # written before any commit window passed
    _wait(lambda: syncs)
    assert syncs[0] - submitted < 0.1
    for i in range(100):  # a steady stream: at most one fsync per commit window
        w.submit((writer.RECORD, record(i), None))
        time.sleep(0.002)
    _wait(lambda: w.pending() == 0)
    count = len(syncs)
    assert count <= 2 + (syncs[-1] - syncs[0]) / 0.05
    assert w.stop(5)
    assert len(spool.read("local", 1000)[0]) == 101
    spool.close()


def test_when_the_disk_refuses_records_wait_in_memory_then_land(tmp_path):
    spool = _spool(tmp_path)
    metrics = Metrics()
    refuse = _refusing(spool)
    w = writer.Writer(spool, commit_ms=10, queue_size=1000, metrics=metrics)
    w.start()
    for i in range(20):
        w.submit((writer.RECORD, record(i), None))
    _wait(lambda: w.failing)
    assert w.pending() == 20 and metrics.spool_write_errors._value.get() >= 1
    refuse["on"] = False
    _wait(lambda: not w.failing and w.pending() == 0, timeout=3)
    assert len(spool.read("local", 100)[0]) == 20
    assert w.stop(5)
    spool.close()


def test_beyond_the_memory_bound_the_oldest_are_dropped_and_counted(tmp_path):
    spool = _spool(tmp_path)
    metrics = Metrics()
    spool.append = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    w = writer.Writer(spool, commit_ms=10, queue_size=50, metrics=metrics)
    w.start()
    for i in range(200):
        w.submit((writer.RECORD, record(i), None))
        if i % 20 == 0:
            _barrier(w)
    _barrier(w)
    dropped = metrics.records_dropped.labels("queue_full")._value.get()
    assert dropped > 0 and dropped + w.pending() == 200
    assert w.stop(5)
    spool.close()


def test_a_roll_carries_the_begins_of_requests_still_running(tmp_path):
    spool = _spool(tmp_path, segment_bytes=4096)
    w = writer.Writer(spool, commit_ms=5)
    w.start()
    w.submit((writer.BEGIN, "a" * 24, {"ts": 1.0, "route": "chat"}))
    w.submit((writer.BEGIN, "b" * 24, {"ts": 1.0, "route": "chat"}))
    w.submit((writer.RECORD, record(0), "a" * 24))
    for i in range(100):
        w.submit((writer.RECORD, record(i + 1), None))
    _barrier(w)
    assert w.stop(5)
    spool.close()
    oldest = sorted(spool.dir.glob("*.seg"))[0]
    oldest.unlink()  # the segment holding the original BEGINs is gone…
    again = Spool(tmp_path)
    assert list(again.open().open_begins()) == ["b" * 24]  # …"b" was carried into the next one
    again.close()


def test_over_the_cap_the_oldest_segments_go_and_are_counted(tmp_path):
    spool = _spool(tmp_path, max_bytes=1024 * 1024, segment_bytes=64 * 1024)
    metrics = Metrics()
    w = writer.Writer(spool, commit_ms=5, metrics=metrics)
    w.start()
    for i in range(6000):
        w.submit((writer.RECORD, record(i), None))
    _barrier(w)
    assert w.stop(5)
    dropped = metrics.records_dropped.labels("spool_full")._value.get()
    kept = 0
    for _ in range(1000):
        batch, end = spool.read("local", 500)
        spool.ack("local", end)
        kept += len(batch)
        if not batch:
            break
    assert dropped > 0 and dropped + kept == 6000
    assert spool.bytes <= spool.max_bytes
    spool.close()


def test_a_batch_is_written_in_one_go_and_a_begin_closed_within_it_is_left_out(tmp_path):
    from proxy.telemetry.spool import Recovery

    spool = _spool(tmp_path)
    w = writer.Writer(spool, commit_ms=20)
    w.start()
    a, b = "a" * 24, "b" * 24
    w.submit((writer.BATCH, [(writer.BEGIN, a, {"ts": 1}), (writer.BEGIN, b, {"ts": 2}),
                             (writer.RECORD, record(1), a)]))
    _barrier(w)
    assert w.pending() == 0
    recovery = Recovery()
    for path in sorted(tmp_path.rglob("*.seg")):
        recovery.scan(path.read_bytes())
    assert set(recovery.begins) == {b} and set(recovery.open_begins()) == {b}  # a: BEGIN never written
    w.submit((writer.BATCH, [(writer.RECORD, record(2), b)]))
    _barrier(w)
    recovery = Recovery()
    for path in sorted(tmp_path.rglob("*.seg")):
        recovery.scan(path.read_bytes())
    assert recovery.records == 2 and recovery.open_begins() == {}
    assert w.stop(5)


# -- the loop's own writes (write_now) --------------------------------------------------------

def _records_in(spool) -> list[str]:
    from proxy.telemetry.lane import read_records

    return [r.id for r in read_records(spool, "local", 10_000)[0]]


def test_the_loop_writes_at_once_and_the_thread_syncs_with_a_wake_up_per_commit_window(tmp_path):
    spool = _spool(tmp_path)
    syncs = []
    real_sync = spool.sync
    spool.sync = lambda: (syncs.append(time.monotonic()), real_sync())
    w = writer.Writer(spool, commit_ms=50)
    rounds = []  # each time the thread woke (an item, or its sync's timeout)
    real_take = w._take
    w._take = lambda timeout: (rounds.append(timeout), real_take(timeout))[1]
    w.start()
    began = time.monotonic()
    assert w.write_now([(writer.RECORD, record(0), None)])
    assert spool.bytes > 0 and _records_in(spool) == ["rec-00000000"]  # in the file before it returned
    _wait(lambda: syncs)
    assert syncs[0] - began < 0.1
    for i in range(1, 101):  # a hand-over every 2 ms, as the batcher makes under load
        assert w.write_now([(writer.RECORD, record(i), None)])
        time.sleep(0.002)
    span = time.monotonic() - began
    _wait(lambda: not w._dirty)
    assert len(rounds) <= 3 + 2 * span / 0.05  # not one per write: the point of it
    assert len(syncs) <= 2 + (syncs[-1] - syncs[0]) / 0.05
    assert w.pending() == 0 and len(_records_in(spool)) == 101
    assert w.stop(5)
    assert not w.write_now([(writer.RECORD, record(200), None)])  # stopped: nothing syncs it any more
    spool.close()


def test_the_loop_leaves_its_items_to_the_thread_while_earlier_ones_wait_so_order_holds(tmp_path):
    spool = _spool(tmp_path)
    w = writer.Writer(spool, commit_ms=5)
    slot = "s" * 24
    w.submit((writer.BEGIN, slot, {"ts": 1.0, "route": "chat"}))  # queued; the thread is not running yet
    assert not w.write_now([(writer.RECORD, record(1), slot)])  # its record must not land before it
    assert spool.bytes == 0
    w.submit((writer.BATCH, [(writer.RECORD, record(1), slot)]))  # what the batcher does then
    w.start()
    _barrier(w)
    assert w.write_now([(writer.RECORD, record(2), None)])  # nothing waits any more
    _barrier(w)
    from proxy.telemetry.spool import Recovery
    recovery = Recovery()
    for path in sorted(tmp_path.rglob("*.seg")):
        recovery.scan(path.read_bytes())
    assert recovery.open_begins() == {}  # the BEGIN, then its record: closed
    assert _records_in(spool) == ["rec-00000001", "rec-00000002"]
    assert w.stop(5)
    spool.close()


def test_while_the_disk_refuses_the_loop_hands_over_and_nothing_is_lost(tmp_path):
    spool = _spool(tmp_path)
    refuse = _refusing(spool)
    w = writer.Writer(spool, commit_ms=10, queue_size=1000, metrics=Metrics())
    w.start()
    assert w.write_now([(writer.RECORD, record(0), None)])  # tried here, refused: kept, the thread retries
    assert w.failing and w.pending() == 1
    assert not w.write_now([(writer.RECORD, record(1), None)])  # failing: the thread's to write
    w.submit((writer.BATCH, [(writer.RECORD, record(1), None)]))
    refuse["on"] = False
    _wait(lambda: not w.failing and w.pending() == 0, timeout=3)
    assert _records_in(spool) == ["rec-00000000", "rec-00000001"]
    assert w.write_now([(writer.RECORD, record(2), None)])  # writable again: back on the loop
    assert w.stop(5)
    spool.close()


def test_a_roll_the_loop_s_write_makes_due_is_the_thread_s_and_carries_running_begins(tmp_path):
    spool = _spool(tmp_path, segment_bytes=4096)
    w = writer.Writer(spool, commit_ms=5)
    w.start()
    assert w.write_now([(writer.BEGIN, "b" * 24, {"ts": 1.0, "route": "chat"})])
    for i in range(100):
        items = [(writer.RECORD, record(i), None)]
        if not w.write_now(items):  # the thread holds the spool (rolling it): the batcher hands over
            w.submit((writer.BATCH, items))
    _barrier(w)
    assert len(list(spool.dir.glob("*.seg"))) > 1  # rolled, by the thread
    assert w.stop(5)
    spool.close()
    for oldest in sorted(spool.dir.glob("*.seg"))[:-1]:
        oldest.unlink()
    again = Spool(tmp_path)
    assert list(again.open().open_begins()) == ["b" * 24]  # carried into the newest segment
    again.close()
