"""The spool's on-disk format: append-only segment files of checksummed frames.

    frame   = magic (4) | kind (1) | length (4, LE) | crc32 (4, LE) | payload (length bytes)
    crc32   = over kind, length and payload, so a torn or flipped header is caught like a payload

A damaged frame (torn tail, flipped byte, garbage) is skipped by scanning forward for the next
magic whose frame checks out: one damage costs the frame it hit, never the rest of the segment.

Every payload starts with the request's journal slot (24 ASCII hex characters, or 24 "-"):
    RECORD  slot + the usage record as JSON
    BEGIN   slot + a request that reached the gateway (the in-flight journal), as JSON
    END     slot: that request ended without a record
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

MAGIC = b"\xa5UR\x5a"
HEADER = struct.Struct("<4sBII")
RECORD, BEGIN, END = 1, 2, 3
KINDS = frozenset({RECORD, BEGIN, END})
SLOT_BYTES = 24
NO_SLOT = b"-" * SLOT_BYTES
MAX_PAYLOAD = 16 * 1024 * 1024


def _crc(kind: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<BI", kind, len(payload))))


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, kind, len(payload), _crc(kind, payload)) + payload


def payload(slot: str | None, body: bytes = b"") -> bytes:
    return (slot.encode() if slot else NO_SLOT) + body


def split(data: bytes) -> tuple[str | None, bytes]:
    """A payload's journal slot (None when it has none) and its body."""
    slot = data[:SLOT_BYTES]
    return (None if slot == NO_SLOT else slot.decode()), data[SLOT_BYTES:]


def _frame_at(buf: bytes, pos: int, size: int) -> tuple[int, int] | None:
    """(kind, end) of a valid frame starting at `pos`, or None."""
    if size - pos < HEADER.size:
        return None
    magic, kind, length, crc = HEADER.unpack_from(buf, pos)
    end = pos + HEADER.size + length
    if magic != MAGIC or kind not in KINDS or length > MAX_PAYLOAD or end > size:
        return None
    if _crc(kind, memoryview(buf)[pos + HEADER.size:end]) != crc:
        return None
    return kind, end


def _resync(buf: bytes, pos: int, size: int) -> int:
    """The start of the next valid frame after damage at `pos`, or `size`."""
    at = buf.find(MAGIC, pos + 1, size)
    while at != -1:
        if _frame_at(buf, at, size) is not None:
            return at
        at = buf.find(MAGIC, at + 1, size)
    return size


class Frame:
    __slots__ = ("kind", "start", "end", "payload")

    def __init__(self, kind: int, start: int, end: int, payload: bytes) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.payload = payload


def _cut(buf: bytes, pos: int, size: int) -> bool:
    """Could the bytes at `pos` be a frame that the end of `buf` cut short?"""
    if size - pos < HEADER.size:
        return True
    magic, kind, length, _ = HEADER.unpack_from(buf, pos)
    return magic == MAGIC and kind in KINDS and length <= MAX_PAYLOAD and pos + HEADER.size + length > size


def frames(buf: bytes, damaged: list | None = None, *, final: bool = True) -> Iterator[Frame]:
    """The valid frames of `buf`; each damaged stretch skipped is appended to `damaged`.

    With `final` false, `buf` is a window on a longer file: iteration stops where a frame may
    continue past the window, so the caller can read on from the last frame's end.
    """
    pos, size = 0, len(buf)
    while pos < size:
        found = _frame_at(buf, pos, size)
        if found is None:
            if not final and _cut(buf, pos, size):
                return
            nxt = _resync(buf, pos, size)
            if not final and nxt == size:
                return
            if damaged is not None:
                damaged.append((pos, nxt))
            pos = nxt
            continue
        kind, end = found
        yield Frame(kind, pos, end, buf[pos + HEADER.size:end])
        pos = end
