"""Relaying an upstream SSE stream to the client as it arrives, and ending it honestly.

The stream ends with the upstream's own terminal event, or with an error event when the
upstream was cut short, stalled or ran past the maximum duration: never a fake `[DONE]`.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.providers.base import Usage
from proxy.upstream import Opened, Watchdog

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def error_event(error: ProxyError) -> bytes:
    return b"data: " + error.to_json() + b"\n\n"


async def relay(http_request: web.Request, opened: Opened, ex, idle: float, max_stream: float) -> web.StreamResponse:
    out = web.StreamResponse(status=200, headers={**HEADERS, "X-Request-Id": ex.id})
    await out.prepare(http_request)
    parser, upstream = opened.parser, opened.response
    ex.first_byte()
    ending: ProxyError | None = None
    deadline = asyncio.get_running_loop().time() + max_stream
    try:
        async with Watchdog(idle, deadline) as watchdog:
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
        await _try_write(out, error_event(ending))
    return out


def _client_gone(http_request: web.Request) -> bool:
    transport = http_request.transport
    return transport is None or transport.is_closing()


async def _try_write(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except (ConnectionError, aiohttp.ClientError):
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
