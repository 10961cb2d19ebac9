"""Segment frames: checksums catch every torn or flipped frame, and only that frame is lost (R38)."""

from __future__ import annotations

import random

from proxy.telemetry import segments
from proxy.telemetry.segments import BEGIN, END, RECORD, frame, frames, payload, split


def _log(count: int, rng: random.Random) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """Frames of varied kinds and sizes, and each one's (start, end, payload)."""
    out, bounds, at = [], [], 0
    for i in range(count):
        kind = rng.choice((RECORD, RECORD, RECORD, BEGIN, END))
        body = payload(f"{i:024x}", b'{"id":"%d","pad":"%s"}' % (i, b"x" * rng.randrange(0, 300)))
        framed = frame(kind, body)
        bounds.append((at, at + len(framed), body))
        out.append(framed)
        at += len(framed)
    return b"".join(out), bounds


def test_frames_round_trip_with_their_slots():
    data = frame(RECORD, payload("a" * 24, b"{}")) + frame(END, payload(None))
    first, second = frames(data)
    assert (first.kind, split(first.payload)) == (RECORD, ("a" * 24, b"{}"))
    assert (second.kind, split(second.payload)) == (END, (None, b""))


def test_truncation_at_1000_offsets_keeps_every_intact_frame():
    rng = random.Random(38)
    data, bounds = _log(300, rng)
    starts = {start for start, _, _ in bounds}
    for offset in rng.sample(range(1, len(data)), 1000):
        damaged: list = []
        got = [f.payload for f in frames(data[:offset], damaged)]
        assert got == [body for _, end, body in bounds if end <= offset]
        assert len(damaged) == (0 if offset in starts else 1), offset


def test_a_flipped_byte_costs_exactly_the_frame_it_hit():
    rng = random.Random(83)
    data, bounds = _log(300, rng)
    for _ in range(100):
        at = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[at] ^= rng.randrange(1, 256)
        damaged: list = []
        got = [f.payload for f in frames(bytes(flipped), damaged)]
        assert got == [body for start, end, body in bounds if not start <= at < end]
        assert len(damaged) == 1


def test_garbage_between_frames_is_skipped_and_counted_once():
    good = frame(RECORD, payload(None, b"{}"))
    damaged: list = []
    assert len(list(frames(good + b"\x00garbage" + segments.MAGIC + b"junk" + good, damaged))) == 2
    assert len(damaged) == 1


def test_a_window_stops_before_a_frame_it_cut():
    data = frame(RECORD, payload(None, b"1" * 100)) + frame(RECORD, payload(None, b"2" * 100))
    window = data[: len(data) - 10]
    assert [f.end for f in frames(window, final=False)] == [len(data) // 2]
    assert len(list(frames(data[:5], final=False))) == 0
