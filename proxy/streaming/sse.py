"""The one incremental Server-Sent Events decoder (WHATWG HTML, "event stream interpretation").

Lines end in CRLF, LF or CR, split anywhere across reads; `:` lines are comments; `data` lines
join with LF; a blank line ends a block. Every block keeps its exact raw bytes, so a relay can
forward bytes untouched (the concatenation of all raws is the input) and still drop a block.
Values stay bytes: nothing is decoded as text here, so UTF-8 split across reads is never hurt.

`Framer` is the per-read front the relays use: it cuts a read at its last complete block with one
`rfind`, so a read carrying a hundred events costs one cut, not a hundred line parses. It takes
that fast path only while every line of the stream ends the same way, in LF or in CRLF (what
providers send); the first read that breaks that (a lone CR, a mix, a byte order mark) hands the
stream to `Decoder` for good, so the answer is always the decoder's.
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

    def __init__(self, started: bool = False) -> None:
        self._buf = b""  # raw bytes of the unfinished block
        self._scan = 0  # offset in _buf of the first line not yet parsed
        self._skip_lf = False  # the last byte seen was CR: a following LF belongs to it
        self._started = started  # past the start of the stream, where a byte order mark may be
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


class Framer:
    """Feed reads as they arrive; get back, per read, the complete blocks it ends as one bytes.

    While `fast`, `eol` is the stream's line ending (b"\\n" or b"\\r\\n") and `sep` the blank line
    that ends a block (`eol` twice): a caller may scan the bytes `feed` returned with them (every
    block in them ends in `sep`, but for a CRLF stream's read ending in the CR of one, and the
    read after it starting with the LF). Once not `fast`, the stream went to
    `Decoder`, and `events` is the only way to read the blocks.
    """

    __slots__ = ("_rest", "_decoder", "_blocks", "_after_cr", "eol", "sep")

    def __init__(self) -> None:
        self._rest = b""  # the unfinished block
        self._decoder: Decoder | None = None
        self._blocks: list[Block] = []  # what the decoder completed on the last read
        self._after_cr = False  # the last read ended in a CR that closed a block: an LF next is its pair
        self.eol: bytes | None = None  # None until the first line ending, and for good off the fast path
        self.sep = b""

    @property
    def fast(self) -> bool:
        return self._decoder is None

    def feed(self, chunk: bytes) -> bytes:
        """The raw bytes of the blocks this read completes, joined (b"" when none); byte-exact:
        everything fed comes back once, in order, except an unfinished block at the end."""
        if self.eol == b"\n" and not self._rest and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            return chunk  # the common read: whole events, nothing held over
        if (self.eol == b"\r\n" and not self._rest and not self._after_cr and chunk.endswith(b"\r\n\r\n")
                and chunk.count(b"\r") == chunk.count(b"\n") == chunk.count(b"\r\n")):
            return chunk  # the same, in CRLF
        if self._decoder is not None:
            return self._decode(chunk)
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":  # the LF of a CRLF whose CR ended the last read: relayed, not parsed
                return b"\n" + self.feed(chunk[1:]) if len(chunk) > 1 else b"\n"
        held = len(self._rest)
        return self._cut(self._rest + chunk if held else chunk, held)

    def _cut(self, buf: bytes, held: int) -> bytes:
        """`buf` (the unfinished block, `held` bytes, then the read) up to its last complete block.

        What was held was checked with the read it came in: only the new bytes (and the last one
        held, which may be the CR of a CRLF) are scanned, not the whole of a long event again at
        each of the many reads it arrives in."""
        eol = self.eol
        if eol is None:
            cr = buf.find(b"\r")
            eol = self._line_ending(buf, cr)
            if eol is None:  # no line has ended yet
                self._rest = buf
                return b""
            if not eol or (cr != -1 and not _uniform(buf, eol)):  # no CR at all: every line ends in LF
                return self._fall_back(buf)
        elif not _uniform(buf[held - 1:] if held else buf, eol):
            return self._fall_back(buf)
        if eol == b"\r\n" and buf.endswith(b"\r\n\r"):
            # A CR ends a line whether or not an LF follows: this blank line is complete already.
            self._after_cr = True
            self._rest = b""
            return buf
        end = buf.rfind(self.sep, max(held - len(self.sep) + 1, 0))
        if end == -1:
            self._rest = buf
            return b""
        end += len(self.sep)
        self._rest = buf[end:]
        return buf[:end] if self._rest else buf

    def _line_ending(self, buf: bytes, cr: int) -> bytes | None:
        """The stream's line ending from its first line (`cr`: where the first CR is, or -1): b""
        when it is not one the fast path takes."""
        if buf[:1] == _BOM[:1]:
            return b""  # a byte order mark (or what may become one): the decoder strips it
        lf = buf.find(b"\n")
        if lf == -1:  # no LF yet: undecided while a CR, if any, is the last byte (an LF may follow)
            return None if cr == -1 or cr == len(buf) - 1 else b""
        eol = b"\n" if cr == -1 or cr > lf else b"\r\n" if cr == lf - 1 else b""
        if eol:
            self.eol, self.sep = eol, eol + eol
        return eol

    def _fall_back(self, buf: bytes) -> bytes:
        started = self.eol is not None  # past the stream's first bytes: no byte order mark to strip
        self.eol, self.sep = None, b""
        self._rest = b""
        self._decoder = Decoder(started=started)
        return self._decode(buf)

    def _decode(self, chunk: bytes) -> bytes:
        blocks = self._blocks = self._decoder.feed(chunk)
        if not blocks:
            return b""
        return blocks[0].raw if len(blocks) == 1 else b"".join(block.raw for block in blocks)

    def blocks(self) -> list[Block]:
        """Off the fast path: the blocks the last `feed` completed, each with its raw bytes."""
        return self._blocks

    def events(self, region: bytes) -> list[bytes]:
        """The data of each event in `region`: the bytes the last `feed` returned (on the fast
        path, any run of whole blocks of bytes `feed` returned)."""
        if self._decoder is not None:
            return [block.data for block in self._blocks if block.data is not None]
        eol, sep = self.eol, self.sep
        one = region.find(sep)
        if one != -1 and one == len(region) - len(sep):  # one block: a paced stream's read
            data = _single_data(region[:one], eol)
            if data is not None:
                return [] if data is _NO_DATA else [data]
        out = []
        parts = region.split(sep)
        last = parts.pop()  # after the final sep: blank lines at most
        if last[-1:] == b"\r":  # a CRLF block closed by the CR of its blank line, the LF to come
            parts.append(last[:-3])
        for part in parts:
            data = _single_data(part, eol)
            if data is None:  # several data lines, or a part that is not one plain block
                out += [block.data for block in Decoder(started=True).feed(part + sep) if block.data is not None]
            elif data is not _NO_DATA:
                out.append(data)
        return out

    def tail(self) -> bytes:
        """Raw bytes of an unfinished block (what a truncated stream left behind)."""
        return self._decoder.tail() if self._decoder is not None else self._rest


_NO_DATA = b"\x00no data"  # a part that is only comments or other fields: no event (compared by identity)


def _single_data(part: bytes, eol: bytes) -> bytes | None:
    """The data of a block with one data line, its last (the shape providers send), cheaply; None
    for any other shape, which the decoder then reads."""
    if part[:5] == b"data:":
        at = 0
    else:
        if part[:1] == b"\n" and eol == b"\r\n":
            return None  # starts with the LF of the last read's CRLF: the decoder reads its lines
        at = part.find(eol + b"data:")
        if at == -1:
            return _NO_DATA if not part or part[:1] == b":" and eol not in part else None
        at += len(eol)
        if part.startswith(b"data" + eol) or eol + b"data" + eol in part[:at]:
            return None  # an earlier bare `data` line: a data field too
    if part.find(eol, at) != -1:
        return None
    value = part[at + 5:]
    return value[1:] if value[:1] == b" " else value


def _uniform(buf: bytes, eol: bytes) -> bool:
    """Every line ending in `buf` is `eol` (a CR at its very end may be half of a CRLF)."""
    if eol == b"\n":
        return b"\r" not in buf
    lf = buf.count(b"\n")
    return buf.count(b"\r\n") == lf and buf.count(b"\r") == lf + (buf[-1:] == b"\r")
