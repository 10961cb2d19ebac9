"""Relaying an upstream SSE stream to the client as it arrives, and ending it honestly.

The stream ends with the upstream's own terminal event, or with an error event when the
upstream was cut short, stalled or ran past the maximum duration: never a fake `[DONE]`.

Backpressure (RELIABILITY R09): each write waits while the client's socket is full, so the
upstream is not read faster than the client reads. A client that reads nothing for `idle` (its
unsent byte count does not move) is disconnected, and the upstream with it.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.providers.base import Usage
from proxy.upstream.dispatch import Opened, Watchdog

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def error_event(error: ProxyError) -> bytes:
    return b"data: " + error.to_json() + b"\n\n"


async def relay(http_request: web.Request, opened: Opened, ex, idle: float, max_stream: float,
                dialect=None) -> web.StreamResponse:
    """`dialect`: an inbound dialect's stream (proxy.dialects.DialectStream), which adds its
    headers and frames its own error event."""
    headers = {**HEADERS, "X-Request-Id": ex.id} if dialect is None else {**HEADERS, "X-Request-Id": ex.id,
                                                                          **dialect.headers}
    frame = error_event if dialect is None else dialect.error_frame
    out = web.StreamResponse(status=200, headers=headers)
    parser, upstream = opened.parser, opened.response
    ending: ProxyError | None = None
    deadline = asyncio.get_running_loop().time() + max_stream
    transport = http_request.transport
    unsent = transport.get_write_buffer_size if transport is not None else None
    try:
        await out.prepare(http_request)  # the client may have gone while the provider answered
        ex.first_byte()
        async with Watchdog(idle, deadline, unsent) as watchdog:
            if opened.first:
                await out.write(opened.first)
            while chunk := await upstream.chunk():
                watchdog.touch()
                data = parser.feed(chunk)
                if data:
                    await out.write(data)
            tail = parser.close()
            if tail:
                await out.write(tail)
    except TimeoutError:
        if _client_stalled(http_request):
            ex.status, ex.error_type = "client_aborted", "client_stalled"
        else:
            ex.status = "upstream_timeout"
            reason = "ran past the maximum stream duration" if watchdog.reason == "max_duration" else "stalled"
            ending = UpstreamTimeout(f"the provider's stream {reason}")
    except (aiohttp.ClientError, ConnectionError) as exc:
        if _client_gone(http_request):
            ex.status = "client_aborted"
        else:
            ex.status = "upstream_truncated"
            ending = UpstreamError(f"the provider's stream broke off ({type(exc).__name__})",
                                   code="upstream_truncated")
    else:
        if not (parser.done or parser.finished):
            ex.status = "upstream_truncated"
            ending = UpstreamError("the provider's stream ended before it was complete",
                                   code="upstream_truncated")
    finally:
        upstream.close()
        ex.release()
        _take_usage(ex, parser)
    if ending is not None:
        ex.error_type = ending.code
        await _try_write(out, frame(ending), idle)
    if ex.error_type == "client_stalled":
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


def _take_usage(ex, parser) -> None:
    if parser.model:
        ex.model_served = parser.model
    if parser.usage is not None:
        ex.usage = parser.usage
        return
    completion = parser.content_events
    ex.estimated = True
    ex.usage = Usage(prompt_tokens=ex.prompt_estimate, completion_tokens=completion,
                     total_tokens=ex.prompt_estimate + completion)
