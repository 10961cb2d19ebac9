"""The spool: records leave only once every sink acknowledged them; cursors, caps, recovery (R38)."""

from __future__ import annotations

import os
import random
import time

from proxy.telemetry import segments
from proxy.telemetry.segments import BEGIN, END, RECORD, frame, payload
from proxy.telemetry.spool import Spool


def _records(first: int, count: int, pad: int = 200) -> bytes:
    return b"".join(frame(RECORD, payload(None, b'{"n":%d,"pad":"%s"}' % (i, b"x" * pad)))
                    for i in range(first, first + count))


def _numbers(payloads) -> list[int]:
    return [int(p.split(b",")[0].split(b":")[1]) for p in payloads]


def _fill(spool: Spool, total: int, per_write: int = 10) -> None:
    for first in range(0, total, per_write):
        spool.append(_records(first, per_write))
        if spool.wants_roll():
            spool.roll()


def _drain(spool: Spool, name: str, limit: int = 50) -> list[int]:
    got = []
    for _ in range(10_000):
        batch, end = spool.read(name, limit)
        spool.ack(name, end)
        if not batch:
            return got
        got += _numbers(batch)
    raise AssertionError("the reader never reached the end")


def test_records_leave_only_after_every_reader_acknowledged(tmp_path):
    spool = Spool(tmp_path, max_bytes=10 * 1024 * 1024, segment_bytes=16 * 1024)
    spool.open()
    spool.attach("fast")
    spool.attach("slow")
    _fill(spool, 500)
    assert len(list(spool.dir.glob("*.seg"))) > 5
    assert _drain(spool, "fast") == list(range(500))
    assert len(list(spool.dir.glob("*.seg"))) > 5  # "slow" still needs them
    assert _drain(spool, "slow", limit=7) == list(range(500))
    assert len(list(spool.dir.glob("*.seg"))) == 1  # only the active segment is left
    spool.close()


def test_a_batch_held_unsent_is_added_to_from_its_end_across_segments(tmp_path):
    """A lane waiting for a full batch reads on from what it holds, not again from its cursor."""
    spool = Spool(tmp_path, segment_bytes=16 * 1024)
    spool.open()
    spool.attach("local")
    _fill(spool, 30)
    held, end = spool.read("local", 64)
    for first in range(30, 200, 10):  # rolls into new segments while the batch is held
        spool.append(_records(first, 10))
        if spool.wants_roll():
            spool.roll()
    more, end = spool.read("local", 64 - len(held), end)
    assert _numbers(held + more) == list(range(64))
    spool.ack("local", end)
    assert _drain(spool, "local") == list(range(64, 200))
    spool.close()


def _castai_spool(tmp_path, records: int) -> Spool:
    """An open spool of small segments holding `records` records, with one reader attached."""
    spool = Spool(tmp_path, segment_bytes=16 * 1024)
    spool.open()
    spool.attach("castai")
    _fill(spool, records)
    return spool


def test_a_restart_resumes_after_the_last_acknowledged_batch(tmp_path):
    spool = _castai_spool(tmp_path, 100)
    batch, end = spool.read("castai", 30)
    spool.ack("castai", end)
    spool.read("castai", 30)  # sent, never acknowledged: the crash comes first
    spool.close()
    again = Spool(tmp_path, segment_bytes=16 * 1024)
    recovery = again.open()
    assert again.dir == spool.dir and recovery.records == 100 and recovery.damaged == 0
    again.attach("castai")
    assert _drain(again, "castai") == list(range(30, 100))  # the unacknowledged batch is resent once
    again.close()


def test_a_cursor_written_by_an_older_version_is_read_and_then_overwritten_whole(tmp_path):
    spool = _castai_spool(tmp_path, 100)
    _, end = spool.read("castai", 30)
    spool.close()
    cursor = spool.dir / "castai.cursor"
    cursor.write_text(f"{end[0]} {end[1]}\n")  # the old format: as short as the numbers
    again = Spool(tmp_path, segment_bytes=16 * 1024)
    again.open()
    again.attach("castai")
    _, later = again.read("castai", 10)
    again.ack("castai", later)  # rewritten in place, fixed width: nothing of the old line is left
    assert cursor.read_text().split() == [f"{later[0]:012d}", f"{later[1]:012d}"]
    assert _drain(again, "castai") == list(range(40, 100))
    again.close()


def test_drop_oldest_counts_exactly_what_each_reader_lost(tmp_path):
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    spool.open()
    spool.attach("local")
    spool.attach("castai")
    in_flight, in_flight_end = spool.read("castai", 5)  # being sent while the cap is hit: not lost
    lost = {}
    for first in range(0, 1000, 10):
        spool.append(_records(first, 10))
        _drain(spool, "local")
        if spool.wants_roll():
            spool.roll()
        for name, count in spool.drop_oldest().items():
            lost[name] = lost.get(name, 0) + count
    assert spool.bytes <= spool.max_bytes + 8 * 1024
    assert "local" not in lost
    spool.ack("castai", in_flight_end)  # …and finally taken
    remaining = _drain(spool, "castai")
    assert len(in_flight) + lost["castai"] + len(remaining) == 1000
    assert remaining == list(range(1000 - len(remaining), 1000))
    spool.close()


def test_each_live_process_claims_its_own_directory_and_adopts_a_dead_ones(tmp_path):
    a, b = Spool(tmp_path), Spool(tmp_path)
    a.open()
    b.open()
    assert a.dir != b.dir
    a.close()
    c = Spool(tmp_path)
    c.open()
    assert c.dir == a.dir
    b.close()
    c.close()


def test_requests_begun_and_never_ended_are_found_at_recovery(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    slots = [f"{i:024x}" for i in range(4)]
    spool.append(b"".join(frame(BEGIN, payload(slot, b'{"ts":1.0,"route":"chat"}')) for slot in slots))
    spool.append(frame(RECORD, payload(slots[0], b"{}")) + frame(END, payload(slots[1])))
    spool.roll(frame(BEGIN, payload(slots[2], b'{"ts":1.0,"route":"chat"}')))  # carried along
    spool.close()
    again = Spool(tmp_path)
    assert sorted(again.open().open_begins()) == slots[2:]
    again.close()


def test_r38_a_64_mib_spool_with_a_torn_tail_and_a_flipped_byte_recovers_fast(tmp_path):
    spool = Spool(tmp_path, max_bytes=256 * 1024 * 1024, segment_bytes=8 * 1024 * 1024)
    spool.open()
    total = 0
    while spool.bytes < 64 * 1024 * 1024:
        spool.append(_records(total, 1000, pad=500))
        total += 1000
        if spool.wants_roll():
            spool.roll()
    spool.close()
    files = sorted(spool.dir.glob("*.seg"))
    last = files[-1].read_bytes()
    if not last:
        files.pop()
        last = files[-1].read_bytes()
    rng = random.Random(38)
    files[-1].write_bytes(last[: len(last) - rng.randrange(10, 400)])  # torn inside the last frame
    middle = bytearray(files[0].read_bytes())
    middle[rng.randrange(len(middle))] ^= 0x5A
    files[0].write_bytes(bytes(middle))
    started = time.perf_counter()
    again = Spool(tmp_path, max_bytes=256 * 1024 * 1024)
    recovery = again.open()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed
    assert recovery.damaged == 2 and recovery.records == total - 2
    again.attach("castai")
    assert len(_drain(again, "castai", limit=5000)) == total - 2
    again.close()


def test_a_failed_write_leaves_the_segment_as_it_was(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    spool.open()
    spool.append(_records(0, 3))
    size = spool.bytes

    def short_then_enospc(fd, data, offset, real=os.pwrite):
        real(fd, bytes(data[:7]), offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", short_then_enospc)
    try:
        spool.append(_records(3, 3))
    except OSError:
        pass
    monkeypatch.undo()
    spool.append(_records(6, 3))
    spool.attach("local")
    assert _numbers(spool.read("local", 100)[0]) == [0, 1, 2, 6, 7, 8]
    assert spool.bytes == size + len(_records(6, 3))
    assert not list(segments.frames(b"", []))
    spool.close()
