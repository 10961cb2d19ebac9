"""Relaying an upstream SSE stream to the client as it arrives, and ending it honestly.

The stream ends with the upstream's own terminal event, or with an error event when the
upstream was cut short, stalled or ran past the maximum duration: never a fake `[DONE]`.

Backpressure (a slow client must not make the gateway buffer the stream): each write waits while the client's socket is full, so the
upstream is not read faster than the client reads. A client that reads nothing for `idle` (its
unsent byte count does not move) is disconnected, and the upstream with it.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from proxy.dialects.base import DialectStream
from proxy.edge import drain
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.providers.base import Usage
from proxy.upstream.attempts import Attempts
from proxy.upstream.dispatch import Opened, Watchdog

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class SSEResponse(web.StreamResponse):
    """An SSE answer whose head waits for its first bytes and goes out in the same write, as a
    `web.Response`'s does (aiohttp's switch for it), and whose last bytes go out with the end of
    the chunked body: a stream that arrived whole (a burst) is one write to the client, not three.
    Each write wakes the client's side; on a loaded core the wake-ups cost more than the bytes.
    An aiohttp without the switch sends the head alone, as before."""

    _send_headers_immediately = False


def error_event(error: ProxyError) -> bytes:
    return b"data: " + error.to_json() + b"\n\n"


class Relay:
    """One stream's relay. What it found is read from it when the stream has ended, or when the
    client's cancellation cut the stream short: `status`, `error_type`, `first_byte_at`, `usage()`."""

    __slots__ = ("opened", "request_id", "attempts", "prompt_estimate", "status", "error_type", "first_byte_at")

    def __init__(self, opened: Opened, request_id: str, attempts: Attempts | None = None,
                 prompt_estimate: int = 0) -> None:
        self.opened = opened
        self.request_id = request_id
        self.attempts = attempts  # released when the provider's stream is let go
        self.prompt_estimate = prompt_estimate
        self.status = "completed"
        self.error_type: str | None = None
        self.first_byte_at: float | None = None

    def usage(self) -> tuple[str | None, Usage, bool]:
        """(the model the provider named, the tokens, whether they are estimated): the provider's
        count when it sent one, else the prompt's estimate and the content events relayed."""
        parser = self.opened.parser
        if parser.usage is not None:
            return parser.model, parser.usage, False
        completion = parser.content_events
        estimate = self.prompt_estimate
        return parser.model, Usage(prompt_tokens=estimate, completion_tokens=completion,
                                   total_tokens=estimate + completion), True

    async def run(self, http_request: web.Request, idle: float, max_stream: float,
                  dialect: DialectStream | None = None) -> web.StreamResponse:
        """`dialect`: an inbound dialect's stream (proxy.dialects.DialectStream), which adds its
        headers and frames its own error event."""
        opened = self.opened
        headers = {**HEADERS, "X-Request-Id": self.request_id} if dialect is None else \
            {**HEADERS, "X-Request-Id": self.request_id, **dialect.headers}
        frame = error_event if dialect is None else dialect.error_frame
        out = SSEResponse(status=200, headers=headers)
        parser, upstream = opened.parser, opened.response
        ending: ProxyError | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_stream
        transport = http_request.transport
        unsent = transport.get_write_buffer_size if transport is not None else None
        last = b""  # the answer's last bytes, held to go out with its end (one write, not two)
        try:
            drain.streaming(http_request, out)
            await out.prepare(http_request)  # the client may have gone while the provider answered
            self.first_byte_at = time.monotonic()
            async with Watchdog(idle, deadline, unsent) as watchdog:
                if upstream.complete:
                    last = opened.first
                else:
                    await out.write(opened.first)  # with the head; b"": the head alone, now
                while chunk := await upstream.chunk():
                    watchdog.touch()
                    data = parser.feed(chunk)
                    if data:
                        if upstream.complete:
                            last += data
                        else:
                            await out.write(data)
                last += parser.close()
                if parser.done or parser.finished:
                    held, last = last, b""
                    await out.write_eof(held)
        except TimeoutError:
            if _client_stalled(http_request):
                self.status, self.error_type = "client_aborted", "client_stalled"
            else:
                self.status = "upstream_timeout"
                reason = "ran past the maximum stream duration" if watchdog.reason == "max_duration" else "stalled"
                ending = UpstreamTimeout(f"the provider's stream {reason}")
        except (aiohttp.ClientError, ConnectionError) as exc:
            if _client_gone(http_request):
                self.status = "client_aborted"
            else:
                self.status = "upstream_truncated"
                ending = UpstreamError(f"the provider's stream broke off ({type(exc).__name__})",
                                       code="upstream_truncated")
        else:
            if not (parser.done or parser.finished):
                self.status = "upstream_truncated"
                ending = UpstreamError("the provider's stream ended before it was complete",
                                       code="upstream_truncated")
        finally:
            upstream.close()
            if self.attempts is not None:
                self.attempts.release()
        if ending is not None:
            self.error_type = ending.code
            await _try_write(out, last + frame(ending), idle)  # what arrived, then why it ended
        if self.error_type == "client_stalled":
            http_request.transport.abort()  # a reset: nothing more can reach a client that stopped reading
        return out


def _client_stalled(http_request: web.Request) -> bool:
    """Bytes for the client are waiting: it, not the provider, stopped the stream."""
    transport = http_request.transport
    return transport is not None and not transport.is_closing() and transport.get_write_buffer_size() > 0


def _client_gone(http_request: web.Request) -> bool:
    transport = http_request.transport
    return transport is None or transport.is_closing()


async def _try_write(out: web.StreamResponse, data: bytes, wait: float) -> None:
    try:
        async with asyncio.timeout(wait):  # a client that stopped reading does not hold us here
            await out.write(data)
    except (ConnectionError, aiohttp.ClientError, TimeoutError):
        pass
