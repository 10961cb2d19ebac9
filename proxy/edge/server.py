"""The HTTP server's own defences, below the routes: slow, huge or malformed clients.

aiohttp parses strictly (llhttp: CL+TE, duplicate lengths, bad chunk sizes, bare LF, obs-fold and
control characters are 400s) and already closes a connection that has not sent a whole request
within its keep-alive timeout, counted from the connection's start or its previous answer. What
it leaves to us, added here:

- a header deadline (`limits.headerTimeout`) that starts at a request's first byte, and a cap on
  the bytes of the whole header section (`limits.maxHeaderBytes`, 431);
- a minimum request body rate (`limits.minBodyRate` over `limits.bodyRateWindow`): a dribbled
  body closes the connection (slow POST);
- a connection cap (`limits.maxConnections`): one more connection closes the oldest idle one
  (no request in progress: silent, keep-alive or still sending headers), or itself when none is;
- framing the parser accepts but a gateway must not: targets that are not origin-form
  (`http://elsewhere/…`, `*`, CONNECT), versions other than HTTP/1.0 and 1.1 (505), HTTP/1.0
  with Transfer-Encoding (400) and transfer codings other than `chunked` (501) — each answered
  and the connection closed, so a request pipelined behind it is never run (`framing_error`,
  asked by the error boundary in proxy.app);
- parser errors answered in OpenAI's error shape and logged at debug, not as tracebacks.

The hooks are a `RequestHandler` subclass (timers only for requests that do not arrive in one
read) and a `Server` subclass, installed by `Runner`; they use aiohttp's internals (`_waiter`,
`_messages`, `AppRunner._make_server`, …). A `Runner` refuses to start on an aiohttp that lacks
one (`proxy.edge.aiohttp_support`), rather than serve with its defences silently gone.
"""

from __future__ import annotations

import asyncio
import http

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from proxy.config import Limits
from proxy.edge.aiohttp_support import check_aiohttp
from proxy.errors import InvalidRequest, PayloadTooLarge, ProxyError
from proxy.net.turn import EndOfTurn, HeldTransport, end_of_turn

log = structlog.get_logger("proxy.edge.server")

_VERSIONS = frozenset({(1, 0), (1, 1)})
READ_BUFSIZE = 1024  # a body buffers past 2 × this, its socket pauses: a read ahead of its handler is paused at once
SMALL_READ = 4 * 1024  # one socket read while no handler reads a body on the connection…
LARGE_READ = 64 * 1024  # …and while one does


class Guard:
    """The limits one server enforces, and what it refused (for /metrics)."""

    __slots__ = ("limits", "refused")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.refused: dict[str, int] = {}

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def collector(self) -> Collector:
        return _GuardCollector(self)


class _GuardCollector(Collector):
    """`aigw_connections_refused_total{reason}`: what the server refused or cut before a handler
    answered (header deadline and size, slow body, connection cap, declared body too large, …)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def collect(self):
        family = CounterMetricFamily("aigw_connections_refused", "Connections and requests the server "
                                     "refused or cut before a handler answered", labels=("reason",))
        for reason, count in sorted(self.guard.refused.items()):
            family.add_metric((reason,), count)
        yield family


def _raw_response(error: ProxyError) -> bytes:
    """A whole HTTP/1.1 answer, for the moments no request object exists yet."""
    body = error.to_json()
    phrase = http.HTTPStatus(error.status).phrase
    head = (f"HTTP/1.1 {error.status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


_HEADER_TIMEOUT = _raw_response(InvalidRequest("the request headers did not arrive in time", status=408,
                                               code="request_timeout"))
_HEADER_TOO_LARGE = _raw_response(InvalidRequest("the request headers are too large", status=431,
                                                 code="request_header_fields_too_large"))


class GuardedHandler(web.RequestHandler):
    """One client connection: aiohttp's handler plus the header deadline and body rate."""

    __slots__ = ("refusal", "discarding", "_guard", "_timer", "_header_bytes", "_payload", "_body_mark",
                 "_body_open")

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self.refusal: ProxyError | None = None  # found while parsing; `framing_error` reports it
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._payload = None  # the body of the latest request: while it runs, bytes are body bytes
        self._body_mark = 0
        self._body_open = False  # a handler reads that body within the body budget: read in large pieces
        self.discarding = False  # the body was refused: what still arrives is dropped unparsed

    def hold_body(self) -> None:
        """The handler waits for the body budget before it reads: the body's rate is not this
        client's fault meanwhile, so its clock stops (called by `proxy.pipeline.serve.read_body`), and
        the socket is not read: what a waiting body holds is what came with its headers."""
        self._cancel_timer()
        payload = self._payload
        if payload is not None and not payload.is_eof() and not self._reading_paused and self._parser is not None:
            self.pause_reading()  # (a body sent whole has nothing to pause; no parser: the client left)

    def open_body(self) -> None:
        """The handler reads the current request's body now, within the body budget (called by
        `proxy.pipeline.serve.read_body`): reads grow to LARGE_READ, one at a time (the body's buffer
        pauses the socket past READ_BUFSIZE, so each read is taken before the next); the body's rate
        is measured from here."""
        self._body_open = True
        if self._reading_paused:  # by `hold_body`, or by the body's buffer (read below resumes it then)
            self.resume_reading()
        payload = self._payload
        if self._timer is None and payload is not None and not payload.is_eof() and self._guard.limits.min_body_rate:
            self._body_mark = payload.total_bytes
            self._timer = self._loop.call_later(self._guard.limits.body_rate_window, self._check_body)

    def close_body(self) -> None:
        """The handler has read the body, or given up on it (called by `proxy.pipeline.serve.read_body`).
        A body left unread was refused, and its connection closes after the answer: see `_discard`."""
        self._body_open = False
        payload = self._payload
        if payload is not None and not payload.is_eof():
            self._discard()

    def _discard(self) -> None:
        """Drop the rest of a refused body unparsed, read in large pieces into the shared buffer:
        it costs no memory, and a client that sends its whole body before it reads still gets the
        answer, which `Closing` follows with the end of our half of the stream. aiohttp's
        lingering close holds the connection until the client hangs up too (at most its lingering
        time), then closes it; a request pipelined behind is never parsed."""
        self.discarding = True
        self._cancel_timer()
        if self._reading_paused:
            self.resume_reading()

    @property
    def reads_body(self) -> bool:
        """A handler is reading the current body, or a refused one is dropped: reads may be
        LARGE_READ, else SMALL_READ."""
        if self.discarding:
            return True
        payload = self._payload
        return self._body_open and payload is not None and not payload.is_eof()

    def idle(self) -> bool:
        """No request in progress: silent, between keep-alive requests, or still sending headers."""
        waiter = self._waiter
        return self.transport is not None and waiter is not None and not waiter.done()

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        payload = self._payload
        in_body = payload is not None and not payload.is_eof()  # decided before this read is parsed
        super().data_received(data)
        if self.transport is None or self._close or self._force_close:
            return  # closing: aiohttp ignores what still arrives, and so do we
        if len(self._messages) > queued:  # a request's headers are complete
            self._headers_done(len(data))
        elif data and not in_body:  # the next request's headers, so far
            self._header_bytes += len(data)
            if self._header_bytes > self._guard.limits.max_header_bytes:
                self._refuse("header_too_large", _HEADER_TOO_LARGE)
            elif self._timer is None:
                self._timer = self._loop.call_later(self._guard.limits.header_timeout, self._header_expired)
        # else: body bytes of the request in progress (the body timer watches their rate)

    def _headers_done(self, size: int) -> None:
        limits = self._guard.limits
        if self._header_bytes + size > limits.max_header_bytes:
            self._measure_headers()  # they came with a large body in one read: measure them exactly
        self._header_bytes = 0
        self._cancel_timer()
        message, payload = self._messages[-1]
        self._payload = payload
        self._body_open = False
        if not payload.is_eof() and self._declares_too_much(message):
            return
        if limits.min_body_rate and not payload.is_eof():  # the body did not come with the headers
            self._body_mark = payload.total_bytes
            self._timer = self._loop.call_later(limits.body_rate_window, self._check_body)

    def _declares_too_much(self, message) -> bool:
        """A declared body over `limits.maxBodyBytes`: refused before any of it is read. The
        answer is a 413 with `Connection: close` (from the route, or the error boundary for the
        others); what the client still sends is dropped unparsed (`_discard`)."""
        limit = self._guard.limits.max_body_bytes
        declared = message.headers.get("Content-Length")
        if declared is None or not limit or int(declared) <= limit:
            return False
        self._guard.count("body_too_large")
        self.refusal = PayloadTooLarge(f"the request body is larger than {limit} bytes")
        self._discard()
        return True

    def _measure_headers(self) -> None:
        cap = self._guard.limits.max_header_bytes
        for message, _ in self._messages:
            raw = getattr(message, "raw_headers", ())
            if sum(len(name) + len(value) + 4 for name, value in raw) > cap:
                self._guard.count("header_too_large")
                self.refusal = InvalidRequest("the request headers are too large", status=431,
                                              code="request_header_fields_too_large")

    def _header_expired(self) -> None:
        self._timer = None
        if self.idle() and self._header_bytes:
            self._refuse("header_timeout", _HEADER_TIMEOUT)

    def _check_body(self) -> None:
        self._timer = None
        payload = self._payload
        if payload is None or payload.is_eof() or self.transport is None:
            return
        limits = self._guard.limits
        if payload.total_bytes - self._body_mark < limits.min_body_rate * limits.body_rate_window:
            self._guard.count("slow_body")
            self.force_close()  # a handler may be mid-answer: closing is the only safe reply
            return
        self._body_mark = payload.total_bytes
        self._timer = self._loop.call_later(limits.body_rate_window, self._check_body)

    def _refuse(self, reason: str, answer: bytes) -> None:
        self._guard.count(reason)
        self._cancel_timer()
        if self.transport is not None:
            self.transport.write(answer)
        self.force_close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        self._payload = None
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Malformed requests: OpenAI's error shape, a debug line, the connection closed."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status = 431
        self._guard.count("malformed")
        log.debug("malformed_request", status=status, error=type(exc).__name__ if exc else None)
        error = InvalidRequest("the request is not valid HTTP/1.1", status=status, code="bad_http_request")
        response = web.Response(status=status, body=error.to_json(), content_type="application/json")
        response.force_close()
        return response


class Reader(asyncio.BufferedProtocol):
    """The protocol the transport sees: it reads into a buffer of the size the handler asks for and
    hands aiohttp's handler the bytes. The loop would read up to 256 KiB at once, so 50 connections
    sending large bodies would hold 50 × 256 KiB before any handler ran; reads are
    SMALL_READ until a handler reads its body within the body budget, then LARGE_READ. One buffer
    serves every connection of a server: a read and its hand-over happen in one callback."""

    __slots__ = ("handler", "_buffer", "_small", "_turn")

    def __init__(self, handler: GuardedHandler, buffer: memoryview, small: memoryview, turn: EndOfTurn) -> None:
        self.handler = handler
        self._buffer = buffer
        self._small = small
        self._turn = turn

    def connection_made(self, transport) -> None:
        # aiohttp writes the answers through it: they go out at the end of the turn (proxy.net.turn)
        self.handler.connection_made(HeldTransport(transport, self._turn))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer if self.handler.reads_body else self._small

    def buffer_updated(self, nbytes: int) -> None:
        handler = self.handler
        if not handler.discarding:
            handler.data_received(bytes(self._buffer[:nbytes]))


class GuardedServer(web.Server):
    """aiohttp's server, making `GuardedHandler`s and keeping the connection count under the cap."""

    def __init__(self, plain: web.Server, guard: Guard) -> None:
        super().__init__(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation, loop=plain._loop, **plain._kwargs)
        self.guard = guard
        self._buffer = memoryview(bytearray(LARGE_READ))  # every read of this server's connections
        self._small = self._buffer[:SMALL_READ]
        self._turn = end_of_turn(self._loop)  # every connection's answers, written together

    def __call__(self) -> Reader:
        return Reader(GuardedHandler(self, loop=self._loop, guard=self.guard, **self._kwargs), self._buffer,
                      self._small, self._turn)

    def connection_made(self, handler, transport) -> None:
        super().connection_made(handler, transport)
        cap = self.guard.limits.max_connections
        if cap and len(self._connections) > cap:
            self._shed(handler)

    def _shed(self, new) -> None:
        # Oldest first; a connection already closed stays listed until its task ends, so skip those.
        for old in self._connections:
            if old is not new and isinstance(old, GuardedHandler) and old.idle():
                self.guard.count("connection_cap_evicted")
                old.force_close()
                return
        self.guard.count("connection_cap")
        new.force_close()


class Runner(web.AppRunner):
    """`web.AppRunner` with the header limits, keep-alive timeout and the guarded server."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs) -> None:
        check_aiohttp()  # refuse to serve without the defences, rather than degrade silently
        super().__init__(app, keepalive_timeout=limits.keep_alive, max_line_size=limits.max_header_line,
                         max_field_size=limits.max_header_line, max_headers=limits.max_headers,
                         read_bufsize=READ_BUFSIZE, **kwargs)
        self.guard = Guard(limits)

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.guard)


_JSON = "application/json"


class Closing(web.Response):
    """An answer after which its connection closes, the request's body left unread: once it is
    written, our half of the stream ends too, so the client sees the answer end and hangs up
    while what it still sends is dropped (`GuardedHandler._discard`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.force_close()

    async def write_eof(self, data: bytes = b"") -> None:
        request = self._req  # (aiohttp lets go of it in write_eof; None once the answer is written)
        await super().write_eof(data)
        transport = request.transport if request is not None else None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()


def closing(error: ProxyError) -> web.Response:
    """The answer to a request refused for its framing: the connection closes after it, so
    nothing pipelined behind the request is ever read as a request."""
    return Closing(status=error.status, body=error.to_json(), content_type="application/json")


def framing_error(http_request: web.BaseRequest) -> ProxyError | None:
    """What is wrong with a request's framing that the parser let through, if anything (the
    error boundary in proxy.app asks, for every request, before the handler runs)."""
    refusal = getattr(http_request.protocol, "refusal", None)
    if refusal is not None:
        return refusal
    if http_request.version not in _VERSIONS:
        return InvalidRequest("only HTTP/1.0 and HTTP/1.1 are served", status=505,
                              code="http_version_not_supported")
    if not http_request.raw_path.startswith("/") or http_request.method == "CONNECT":
        return InvalidRequest("the request target must be a path (origin-form)", code="bad_http_request")
    coding = http_request.headers.get("Transfer-Encoding")
    if coding is not None:
        if http_request.version == (1, 0):
            return InvalidRequest("HTTP/1.0 requests cannot use Transfer-Encoding", code="bad_http_request")
        if coding.strip().lower() != "chunked":
            return InvalidRequest(f"transfer coding {coding[:64]!r} is not supported; use chunked",
                                  status=501, code="not_implemented")
    return None


def error_response(error: ProxyError, request_id: str | None = None, dialect=None) -> web.Response:
    headers = error.headers()
    body = error.to_json() if dialect is None else dialect.error_body(error)
    if request_id:
        headers["X-Request-Id"] = request_id
        if dialect is not None:
            headers[dialect.id_header] = request_id
    kind = Closing if error.closes else web.Response  # the rest of the body is not read: close
    return kind(status=error.status, body=body, content_type=_JSON, headers=headers)
