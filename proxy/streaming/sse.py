"""The one incremental Server-Sent Events decoder (WHATWG HTML, "event stream interpretation").

Lines end in CRLF, LF or CR, split anywhere across reads; `:` lines are comments; `data` lines
join with LF; a blank line ends a block. Every block keeps its exact raw bytes, so a relay can
forward bytes untouched (the concatenation of all raws is the input) and still drop a block.
Values stay bytes: nothing is decoded as text here, so UTF-8 split across reads is never hurt.
"""

from __future__ import annotations

_BOM = b"\xef\xbb\xbf"


class Block:
    """One blank-line-terminated block: an event when it carried data, else comments only."""

    __slots__ = ("raw", "data", "event", "id", "retry")

    def __init__(self, raw: bytes, data: bytes | None, event: bytes | None, id: bytes | None,
                 retry: int | None) -> None:
        self.raw = raw
        self.data = data  # None when the block had no data field (no event is dispatched)
        self.event = event
        self.id = id
        self.retry = retry

    def __repr__(self) -> str:
        return f"Block(data={self.data!r}, event={self.event!r}, id={self.id!r})"


class Decoder:
    """Feed bytes as they arrive; get back the blocks they complete."""

    __slots__ = ("_buf", "_scan", "_skip_lf", "_started", "_data", "_event", "_id", "_retry")

    def __init__(self) -> None:
        self._buf = b""  # raw bytes of the unfinished block
        self._scan = 0  # offset in _buf of the first line not yet parsed
        self._skip_lf = False  # the last byte seen was CR: a following LF belongs to it
        self._started = False
        self._reset_fields()

    def _reset_fields(self) -> None:
        self._data: list[bytes] | None = None
        self._event: bytes | None = None
        self._id: bytes | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Block]:
        if not chunk:
            return []
        buf = self._buf + chunk if self._buf else chunk
        pos = self._scan
        if self._skip_lf and pos < len(buf):
            if buf[pos] == 0x0A:
                pos += 1
            self._skip_lf = False
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                pos = 3
        blocks: list[Block] = []
        size = len(buf)
        start = 0  # where the current block's raw bytes begin
        cr = buf.find(b"\r", pos)
        while pos < size:
            if cr != -1 and cr < pos:
                cr = buf.find(b"\r", pos)
            lf = buf.find(b"\n", pos)
            if lf == -1 and cr == -1:
                break
            end = lf if cr == -1 or (lf != -1 and lf < cr) else cr
            nxt = end + 1
            if end == cr:
                if nxt < size:
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._skip_lf = True
            if end == pos:
                blocks.append(self._dispatch(buf[start:nxt]))
                start = nxt
            else:
                self._field(buf[pos:end])
            pos = nxt
        self._buf = buf[start:] if start < size else b""
        self._scan = pos - start
        return blocks

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ":" comment
            return
        colon = line.find(b":")
        if colon == -1:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1:]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)

    def _dispatch(self, raw: bytes) -> Block:
        data = None if self._data is None else b"\n".join(self._data)
        block = Block(raw, data, self._event, self._id, self._retry)
        self._reset_fields()
        return block

    def tail(self) -> bytes:
        """Raw bytes of an unfinished block (what a truncated stream left behind)."""
        return self._buf
