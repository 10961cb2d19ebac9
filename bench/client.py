"""A minimal HTTP/1.1 keep-alive client as an asyncio Protocol: the load generator's wire.

aiohttp's client costs several times more CPU per request and per chunk than the servers it
would be measuring, and the load generator shares a core with the mock upstream. This one
writes a prebuilt request and parses only what the drivers need: the status, the framing
(Content-Length, chunked, or until close) and the body bytes, handed to a sink as they come.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _CLOSE = range(7)


class Sink:
    """What a driver does with one response; the default ignores the body."""

    __slots__ = ()

    def head(self, status: int) -> None:
        pass

    def body(self, data: bytes) -> None:
        pass


class Endpoint:
    """A target URL split once into what a connection and a request line need."""

    __slots__ = ("host", "port", "path", "url")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// targets are supported: {url}")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"

    def request(self, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 f"Content-Length: {len(body)}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._state = _HEAD
        self._left = 0
        self._keep = True
        self._sink: Sink | None = None
        self._done: asyncio.Future | None = None
        self._out: list[bytes] = []  # body bytes parsed from one read, handed to the sink at once

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, endpoint.host, endpoint.port)
        return conn

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            if self._state == _CLOSE:
                self._done.set_result(True)
            else:
                self._done.set_exception(ConnectionError("the server closed the connection mid-response"))

    def send(self, raw: bytes, sink: Sink) -> asyncio.Future:
        """Write a request; the future resolves (to keep-alive or not) when the response ends."""
        self._sink = sink
        self._state = _HEAD
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self._done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._done.done():
            return  # nothing was asked: a stray byte after a response is ignored
        self._buf += data
        try:
            self._parse()
        except ValueError as exc:
            self._done.set_exception(ConnectionError(f"bad response framing: {exc}"))
            self.close()
        self._flush()

    def _finish(self) -> None:
        self._flush()
        self._done.set_result(self._keep)

    def _emit(self, count: int) -> None:
        self._out.append(bytes(self._buf[:count]))
        del self._buf[:count]

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._sink.body(out[0] if len(out) == 1 else b"".join(out))

    def _parse(self) -> None:  # noqa: C901 - one state machine reads best in one place
        buf = self._buf
        while not self._done.done():
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(buf[:end]))
                del buf[: end + 4]
            elif state == _LENGTH:
                if not buf and self._left:
                    return
                take = min(self._left, len(buf))
                if take:
                    self._emit(take)
                self._left -= take
                if self._left == 0:
                    self._finish()
            elif state == _CLOSE:
                if buf:
                    self._emit(len(buf))
                return
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
                del buf[: end + 2]
                self._left = size
                self._state = _CHUNK_DATA if size else _TRAILER
            elif state == _CHUNK_DATA:
                if not buf:
                    return
                take = min(self._left, len(buf))
                self._emit(take)
                self._left -= take
                if self._left == 0:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return
                del buf[:2]
                self._state = _CHUNK_SIZE
            else:  # _TRAILER: lines until a blank one
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()

    def _head(self, head: bytes) -> None:
        status = int(head[9:12])
        lower = head.lower()
        if status < 200:  # 1xx: another head follows
            return
        self._keep = b"connection: close" not in lower and not head.startswith(b"HTTP/1.0")
        self._sink.head(status)
        if b"transfer-encoding: chunked" in lower:
            self._state = _CHUNK_SIZE
            return
        at = lower.find(b"content-length:")
        if at >= 0:
            end = lower.find(b"\r\n", at)
            self._left = int(lower[at + 15: end if end >= 0 else None])
            self._state = _LENGTH
            if self._left == 0:
                self._finish()
            return
        self._keep = False
        self._state = _CLOSE


async def exchange(conn: Conn | None, endpoint: Endpoint, raw: bytes, sink: Sink) -> Conn | None:
    """One request on `conn` (opened when None or closed); the connection to reuse, or None."""
    if conn is None or conn.closed:
        conn = await Conn.open(endpoint)
    keep = await conn.send(raw, sink)
    if not keep:
        conn.close()
        return None
    return conn
