"""The HTTP/1.1 client the data plane calls providers with: keep-alive pools, llhttp, nothing else.

aiohttp's `ClientSession` cost the gateway ~120 µs of CPU per request (bench, c32: ~400 µs in
all, a third of it in the client): URL objects, header merging, cookies, tracing, a timer per
request, a payload registry. What calling a provider needs is much less:

- one pool of idle keep-alive connections per origin (scheme, host, port), newest first, closed
  after `keepalive` s unused; no cap on connections (as before: `limit=0`); a pooled connection
  the provider closed while it sat idle (an end of stream or an error seen, or pending on the
  socket when it is taken) is dropped, never written to: a request is not sent into a
  connection already known to be dead (the gateway never resends a request the
  provider may have read, so the idle-close race must be caught before the write);
- connect through the network guard's resolver (`proxy.net.netguard`), IP literals included, so every
  address is checked again at connect time; TLS with the system's
  trust store and SNI, the connect timeout as given;
- the request written in one go (head and body bytes), `Content-Length` always; header values
  with CR or LF refused (no header injection through a provider setting);
- the answer parsed by llhttp (`httptools`): a head over MAX_HEAD is refused; the body handed to
  the reader as it arrives, reading paused while more than 2 × `read_bufsize` waits (a slow
  client slows the provider); gzip and deflate bodies decompressed when asked;
  a body without length ends with the connection;
- errors the caller can tell apart, because failover depends on them (`proxy.upstream.dispatch`):
  connect timeout, connect failure, a reset while the request was being written (some of its
  bytes never left the gateway's buffers, so the provider cannot have read it whole), a close
  with no answer after it was all written, an answer that is not HTTP, a body cut short.

Egress (`proxy.net.egress`): an origin's connections are made as its `Route` says, decided once
when the origin is first seen. Direct (the common case, no cost added), or through a forward
proxy: `CONNECT host:port` then TLS with the origin inside the tunnel for https, absolute-form
requests to the proxy for http. Pools are per (origin, route), so a tunnel is reused like any
kept-alive connection. Through a proxy the proxy resolves the origin; the network guard still
judges the origin's name (a metadata host or a refused literal is never asked for), and the
proxy itself is never reached on a metadata address (`proxy.net.tunnel`). A provider with settings
of its own passes them (`egress=`, a `proxy.net.egress.Override`); their targets are cached apart.

Not here, on purpose: redirects (never followed), cookies, HTTP/2.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import select
import socket
import ssl
import zlib
from urllib.parse import SplitResult, quote, urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.net import tunnel
from proxy.net.egress import Egress, Route
from proxy.net.egress import why as egress_why
from proxy.net.turn import end_of_turn

MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers
_URL_CACHE_MAX = 1024
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"  # what stays as it is in a path (RFC 3986 pchar, '/', and '%' escapes)
_SAFE_QUERY = _SAFE_PATH + "?"
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_IDLE_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0)
# A connection idle for less than this is reused without asking its socket: a provider closes an
# idle connection when its keep-alive timer runs out (seconds in every server we know), so one
# answered moments ago is not being closed; and the check's poll(2) hands the GIL to the spool's
# threads on every request of a busy pool (~5 % of a request's CPU, measured with py-spy at c32).
_FRESH_IDLE = 0.02


class ClientError(ConnectionError):
    """Calling the provider failed; the subclass says how far the call got."""

    # On a kept-alive connection taken from the pool, closed with no answer begun (reset while
    # writing, or closed after): the provider closed it as idle just as it was reused, too late
    # for the pool's check to see.
    stale = False


class ConnectTimeout(ClientError):
    """No connection within the connect timeout."""


class ConnectFailed(ClientError):
    """No connection: refused, unresolvable, refused by the network guard, TLS failed."""


class EgressFailed(ConnectFailed):
    """No connection, for a reason the operator must fix: the forward proxy refused (407) or
    could not be reached, or TLS failed (unknown issuer, name mismatch, client certificate).
    Its message names the proxy (password masked) or the origin, and the reason: no secret."""


class ResetBeforeSent(ClientError):
    """The connection broke while part of the request still waited in the gateway's buffers."""


class Disconnected(ClientError):
    """The request was all written, and the connection closed before an answer began: the
    provider may have read it (and may charge it)."""


class BadResponse(ClientError):
    """The answer is not HTTP/1.1 the client can read."""


class BodyBroken(ClientError):
    """The connection closed before the answer's body was complete."""


class _Origin:
    """Where connections go, and the ones idle for reuse (newest last)."""

    __slots__ = ("host", "port", "tls", "route", "idle")

    def __init__(self, host: str, port: int, tls: bool, route: Route | None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.route = route  # None or direct: connect to the origin; else through route.proxy
        self.idle: collections.deque[_Connection] = collections.deque()


class _Target:
    """A URL taken apart once: its origin, the request line's target, the Host header."""

    __slots__ = ("origin", "target", "host", "auth")

    def __init__(self, origin: _Origin, target: str, host: str, auth: str | None) -> None:
        self.origin = origin
        self.target = target
        self.host = host
        self.auth = auth


class Response:
    """An answer: status and headers, then its body read with `chunk()` until b""."""

    __slots__ = ("status", "headers", "_conn", "_parts", "_size", "_done", "_error", "_waiter", "_inflate",
                 "_high", "_paused", "_head", "until_close")

    def __init__(self, conn: _Connection, high: int) -> None:
        self._conn: _Connection | None = conn
        self._head: asyncio.Future = conn.loop.create_future()
        self._parts: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._inflate = None
        self._high = high
        self._paused = False
        self.until_close = False  # no length and not chunked: the body ends with the connection
        self.status = 0
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS

    async def chunk(self) -> bytes:
        """What has arrived of the body since the last call (waiting for some); b"" at its end."""
        parts = self._parts
        while not parts:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = parts.popleft() if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            conn = self._conn
            if conn is not None and not conn.closed:
                conn.transport.resume_reading()
        return data

    @property
    def complete(self) -> bool:
        """All of the body has arrived and been handed out: `chunk()` has nothing more to give."""
        return self._done and not self._parts and self._error is None

    def close(self) -> None:
        """Done with the answer: a connection still receiving it is closed, not reused."""
        self._parts.clear()
        conn = self._conn
        if conn is not None and not self._done:
            self._done = True
            self._conn = None
            conn.abort()

    # -- fed by the connection -------------------------------------------------------------
    def _started(self, status: int, headers: CIMultiDict, decompress: bool) -> None:
        self.status = status
        self.headers = CIMultiDictProxy(headers)
        coding = headers.get("Content-Encoding")
        if decompress and coding is not None:
            wbits = _DECODERS.get(coding.strip().lower())
            if wbits is not None:
                self._inflate = zlib.decompressobj(wbits)
        if "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower():
            self.until_close = status >= 200 and status not in (204, 304)
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self._failed(BadResponse("the provider's compressed body could not be decoded"))
                return
            if not data:
                return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._high and not self._paused:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _finished(self) -> None:
        if self._inflate is not None:
            try:
                tail = self._inflate.flush()
            except zlib.error:  # the reader gets the error; the connection is still fine for reuse
                self._failed(BadResponse("the provider's compressed body could not be decoded"))
                tail = b""
            if tail:
                self._parts.append(tail)
        self._done = True
        if self._paused:  # all of it is here: the connection may read again, for its next answer
            self._paused = False
            self._conn.transport.resume_reading()
        self._conn = None
        self._wake()

    def _failed(self, error: BaseException) -> None:
        if self._done:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a caller that went away does not leave it unhandled
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection to an origin, answering one request at a time."""

    __slots__ = ("loop", "client", "origin", "transport", "parser", "response", "closed", "idle_since", "reused",
                 "fd", "_head_bytes", "_headers", "_decompress", "_flushed", "_unsent")

    def __init__(self, client: Client, origin: _Origin) -> None:
        self.loop = client.loop
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False  # taken from the pool at least once
        self.fd = -1
        self._head_bytes = 0
        self._headers: CIMultiDict | None = None
        self._decompress = True
        self._flushed = True
        self._unsent: list[bytes] | None = None

    def send(self, data: list[bytes], response: Response, decompress: bool) -> None:
        """Take the request; it is written with the others of this turn of the loop (proxy.net.turn)."""
        self.response = response
        self._decompress = decompress
        self._head_bytes = 0
        self._headers = CIMultiDict()
        if self.closed or self.transport.is_closing():
            raise ResetBeforeSent("the connection closed before the request was written")
        self._flushed = False  # not written until `_write` says so: a reset before then is safe to retry
        self._unsent = data
        self.client.end_of_turn(self._write)

    def _write(self) -> None:
        data, self._unsent = self._unsent, None
        transport = self.transport
        # The request ended before its turn (cancelled: aborted; or the connection lost:
        # connection_lost failed it as not written): nothing to send.
        if self.closed or transport.is_closing():
            return
        transport.writelines(data)
        # A send refused at once (the provider's reset already here) closes the transport: none of
        # it left, so it counts as not written, like bytes still waiting in the buffer.
        self._flushed = transport.get_write_buffer_size() == 0 and not transport.is_closing()

    def abort(self) -> None:
        self.closed = True
        self.response = None
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        # Told (resume_writing) only once every byte has left the buffer, not at a low-water mark:
        # `_flushed` must never say "written" of a request whose end the provider cannot have had,
        # nor "not written" of one it may have read whole (that one must not be sent again).
        transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes no request asked for: this connection cannot be trusted
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._head_bytes <= MAX_HEAD:
                self._broken(BadResponse(f"the provider's answer is not valid HTTP/1.1 ({exc})"))
                return
        if self._head_bytes > MAX_HEAD:
            self._broken(BadResponse(f"the provider's answer head is larger than {MAX_HEAD} bytes"))

    def resume_writing(self) -> None:
        self._flushed = True

    def eof_received(self) -> bool:
        if self.response is None:  # idle in the pool: the provider closed it; it must not be taken
            self.closed = True
        return False  # close the transport: a half-open provider connection is of no use

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        try:
            self.origin.idle.remove(self)
        except ValueError:
            pass
        response, self.response = self.response, None
        if response is None:
            return
        if self._headers is None and response.until_close:
            response._finished()
        elif self._headers is None:
            response._failed(BodyBroken("the provider closed the connection in the middle of its answer"))
        elif not self._flushed:
            response._failed(ResetBeforeSent("the connection was reset while the request was being written"))
        else:
            response._failed(Disconnected("the provider closed the connection without answering"))

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        if self._head_bytes > MAX_HEAD:
            raise BadResponse("head too large")  # stops the parser; data_received reports it
        status = self.parser.get_status_code()
        if status < 200:  # informational (100 Continue, 103 Early Hints): the answer follows
            self._headers = CIMultiDict()
            return
        headers, self._headers = self._headers, None
        self.response._started(status, headers, self._decompress)

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)

    def on_message_complete(self) -> None:
        if self._headers is not None:  # the end of an informational answer
            return
        response, self.response = self.response, None
        response._finished()
        if self.parser.should_keep_alive() and not self.closed:
            self.client._idle(self)
        else:
            self.abort()

    def _broken(self, error: ClientError) -> None:
        response = self.response
        self.abort()
        if response is not None:
            response._failed(error)


class _Forwarded(_Connection):
    """A connection to a forward proxy carrying absolute-form requests for an http origin."""

    __slots__ = ()

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() == 407:  # the proxy's own refusal, never the origin's answer
            proxy = self.origin.route.proxy
            self._broken(EgressFailed(f"the egress proxy {proxy.shown} refused the request to "
                                      f"{self.origin.host}:{self.origin.port}: HTTP 407 (check the user and "
                                      "password in the proxy URL)"))
            raise EgressFailed("proxy refused")  # stops the parser; the connection is already closed
        super().on_headers_complete()


def host_header(parts: SplitResult) -> str:
    """The Host this client sends for a URL: its host (IPv6 in brackets), with the port when the URL
    writes one, a default port included (a request signed over its Host must sign this one)."""
    host = parts.hostname or ""
    host = host if ":" not in host else f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def _tls_reason(exc: ssl.SSLError) -> str:
    """What went wrong in a TLS handshake, in OpenSSL's words (unknown issuer, hostname mismatch)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate not trusted: {exc.verify_message}"
    return exc.reason or type(exc).__name__


class Client:
    """Keep-alive pools per origin; `request` returns once the answer's head has arrived."""

    def __init__(self, resolver, *, user_agent: str, read_bufsize: int = 16 * 1024, keepalive: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None, egress: Egress | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.egress = egress  # None: every connection direct, as without any proxy setting
        self.resolver = resolver
        self.user_agent = user_agent
        self.high = 2 * read_bufsize
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._origins: dict[tuple, _Origin] = {}
        self._targets: dict[str, _Target] = {}
        self._scoped: dict[object, dict[str, _Target]] = {}  # targets of providers with egress settings
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._poll = select.poll()
        self.end_of_turn = end_of_turn(self.loop)  # where requests are written (proxy.net.turn)

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes, *,
                      connect_timeout: float, decompress: bool = True, fresh: bool = False,
                      egress=None) -> Response:
        """Send one request and wait for the answer's head. `fresh`: on a new connection, not a
        pooled one. A reused connection that fails before an answer begins raises with `stale`.
        `egress`: the provider's own settings (`proxy.net.egress.Override`), None for the gateway's."""
        if egress is None:
            target = self._targets.get(url) or self._target(url, self._targets, None)
        else:
            target = self._scoped_target(url, egress)
        head = self._head(method, target, headers, len(body), decompress)
        data = [head, body] if body else [head]
        conn = None if fresh else self._reuse(target.origin)
        if conn is None:
            conn = await self._connect(target.origin, connect_timeout)
        response = Response(conn, self.high)
        try:
            conn.send(data, response, decompress)
            await response._head
        except BaseException as exc:
            conn.abort()
            if isinstance(exc, ResetBeforeSent | Disconnected):
                exc.stale = conn.reused
            raise
        return response

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().abort()

    # -- requests ----------------------------------------------------------------------------
    def _scoped_target(self, url: str, override) -> _Target:
        targets = self._scoped.get(override)
        if targets is None:
            targets = self._scoped[override] = {}
        return targets.get(url) or self._target(url, targets, override)

    def _route(self, scheme: str, host: str, port: int, override) -> Route | None:
        if self.egress is None:
            return None
        try:
            policy = self.egress.default if override is None else self.egress.policy(override)
        except (OSError, ValueError) as exc:  # a provider's TLS files gone or broken since it was registered
            raise EgressFailed(f"the egress settings for {host}:{port} cannot be used: {egress_why(exc)}") from None
        return policy.route(scheme, host, port)

    def _target(self, url: str, cache: dict[str, _Target], override) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:100]!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        route = self._route(scheme, parts.hostname, port, override)
        key = (scheme, parts.hostname, port, route)  # pools per (origin, route): a tunnel is its own pool
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(parts.hostname, port, scheme == "https", route)
        request_target = quote(parts.path or "/", safe=_SAFE_PATH)
        if parts.query:
            request_target += "?" + quote(parts.query, safe=_SAFE_QUERY)
        host = host_header(parts)
        auth = None
        if parts.username is not None:
            auth = "Basic " + base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        if route is not None and route.proxy is not None and scheme == "http":  # absolute form, to the proxy
            request_target = f"http://{host}{request_target}"
            if route.proxy.auth_line:  # rides on the Host line, whose CRLF ends it: nothing added per request
                host = f"{host}\r\n{route.proxy.auth_line[:-2]}"
        found = _Target(origin, request_target, host, auth)
        if len(cache) >= _URL_CACHE_MAX:
            cache.clear()
        cache[url] = found
        return found

    def _head(self, method: str, target: _Target, headers: dict[str, str], length: int, decompress: bool) -> bytes:
        lines = [f"{method} {target.target} HTTP/1.1\r\nHost: {target.host}\r\n"]
        given = {name.lower() for name in headers}
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name[:40]!r} has a character a header cannot carry")
            lines.append(f"{name}: {value}\r\n")
        if "user-agent" not in given:
            lines.append(f"User-Agent: {self.user_agent}\r\n")
        if "accept-encoding" not in given and decompress:
            lines.append("Accept-Encoding: gzip, deflate\r\n")
        if target.auth is not None and "authorization" not in given:
            lines.append(f"Authorization: {target.auth}\r\n")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        return "".join(lines).encode()

    # -- connections -------------------------------------------------------------------------
    def _reuse(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        now = self.loop.time()
        expired, fresh = now - self.keepalive, now - _FRESH_IDLE
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport.is_closing():
                continue
            if conn.idle_since < expired or (conn.idle_since < fresh and self._peer_closed(conn.fd)):
                conn.abort()
                continue
            conn.reused = True
            return conn
        return None

    def _peer_closed(self, fd: int) -> bool:
        """Anything waiting on an idle connection's socket: its end (FIN), an error (RST) or
        bytes no request asked for, all arrived since the loop last looked. One poll(2) with no
        wait: the provider's idle close must be seen before the request is written, not after."""
        if fd < 0:
            return False
        poll = self._poll
        poll.register(fd, _IDLE_EVENTS)
        try:
            return bool(poll.poll(0))
        finally:
            poll.unregister(fd)

    def _idle(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        conn.origin.idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close connections unused for `keepalive` s, so a burst's connections do not stay open."""
        self._sweeper = None
        expired = self.loop.time() - self.keepalive
        left = False
        for origin in self._origins.values():
            idle = origin.idle
            while idle and idle[0].idle_since < expired:
                idle.popleft().abort()
            left = left or bool(idle)
        if left:
            self._sweeper = self.loop.call_later(self.keepalive / 2, self._sweep)

    async def _connect(self, origin: _Origin, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                route = origin.route
                if route is not None and route.proxy is not None:
                    return await self._through_proxy(origin, route)
                addresses = await self._addresses(origin)
                failure: OSError | None = None
                for family, host, port in addresses:
                    try:
                        _, conn = await self.loop.create_connection(
                            lambda: _Connection(self, origin), host, port, family=family,
                            ssl=self._tls(route) if origin.tls else None,
                            server_hostname=self._server_name(origin) if origin.tls else None)
                        return conn
                    except OSError as exc:  # ssl.SSLError included
                        failure = exc
                if isinstance(failure, ssl.SSLError):
                    raise EgressFailed(f"TLS with {origin.host}:{origin.port} failed: {_tls_reason(failure)}")
                raise ConnectFailed(f"could not connect to {origin.host}:{origin.port}") from failure
        except TimeoutError:
            raise ConnectTimeout(f"connecting to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:  # the resolver: unknown host, or refused by the network guard
            if isinstance(exc, ClientError):
                raise
            raise ConnectFailed(f"could not resolve {origin.host}: {exc}") from exc

    async def _addresses(self, origin: _Origin) -> list[tuple[int, str, int]]:
        # IP literals too: the guard checks them again here, without a lookup
        found = await self.resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
        return [(r["family"], r["host"], r["port"]) for r in found]

    async def _through_proxy(self, origin: _Origin, route: Route) -> _Connection:
        """A connection to the origin through route.proxy: a CONNECT tunnel then TLS for https,
        the proxy itself (absolute-form requests) for http."""
        judge = getattr(self.resolver, "check_host", None)  # the proxy resolves the name: judged here
        if judge is not None:
            try:
                judge(origin.host)
            except ValueError as exc:
                raise ConnectFailed(f"refused to connect to {origin.host}: {exc}") from None
        try:
            if not origin.tls:
                _, conn = await tunnel.connect(self.loop, route.proxy, lambda: _Forwarded(self, origin))
                return conn
            raw = await tunnel.open_tunnel(self.loop, route.proxy, origin.host, origin.port)
        except tunnel.ProxyFailed as exc:
            raise EgressFailed(str(exc)) from exc.__cause__
        conn = _Connection(self, origin)
        try:
            transport = await self.loop.start_tls(raw, conn, self._tls(route), server_hostname=self._server_name(origin))
        except ssl.SSLError as exc:
            raw.abort()
            raise EgressFailed(f"TLS with {origin.host}:{origin.port} (through {route.proxy.shown}) failed: "
                               f"{_tls_reason(exc)}") from None
        except BaseException:
            raw.abort()
            raise
        conn.connection_made(transport)  # start_tls does not call it
        return conn

    @staticmethod
    def _server_name(origin: _Origin) -> str:
        route = origin.route
        return route.server_name if route is not None and route.server_name else origin.host

    def _tls(self, route: Route | None = None) -> ssl.SSLContext:
        if route is not None and route.ssl is not None:
            return route.ssl
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl
