"""`chat/completions` and `embeddings`: authenticate, decode, route, relay, record.

The same pipeline serves the inbound dialects (proxy.dialects): `serve(http_request, "chat",
dialect)` decodes the body with the dialect, answers and fails in its wire.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy import dialects
from proxy.dialects import completions as decoding
from proxy.dialects import tags as tagging
from proxy.edge import journal
from proxy.edge.limits import ADMISSION, BodyBuffer
from proxy.edge.server import Closing, GuardedHandler
from proxy.errors import PayloadTooLarge, ProxyError
from proxy.gateway import GATEWAY, Gateway
from proxy.pipeline import autoroute
from proxy.pipeline.outcome import Exchange
from proxy.pipeline.relay import relay
from proxy.providers.base import estimate_tokens
from proxy.upstream.dispatch import dispatch

_JSON = "application/json"


async def read_body(http_request: web.Request, limit: int, bodies: BodyBuffer) -> bytes:
    """The whole request body, read within the global budget for bodies being read (R20)."""
    declared = http_request.content_length
    if declared is not None and declared > limit:  # the server refuses these first; kept for safety
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    size = limit if declared is None else declared
    protocol = http_request.protocol
    guarded = isinstance(protocol, GuardedHandler)
    reserved = bodies.take(size)
    try:
        if not reserved:
            if guarded:
                protocol.hold_body()
            await bodies.reserve(size)  # or a 503 after `bodyBufferWait`
            reserved = True
        if guarded:
            protocol.open_body()
        content, parts, read = http_request.content, [], 0
        while chunk := await content.readany():  # pieces kept as they came: no copy while growing
            read += len(chunk)
            if read > limit:
                parts.clear()
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        if guarded:
            protocol.close_body()  # a body left unread is dropped from here on
        if reserved:
            bodies.release(size)


def error_response(error: ProxyError, request_id: str | None = None, dialect=None) -> web.Response:
    headers = error.headers()
    body = error.to_json() if dialect is None else dialect.error_body(error)
    if request_id:
        headers["X-Request-Id"] = request_id
        if dialect is not None:
            headers[dialect.id_header] = request_id
    kind = Closing if error.closes else web.Response  # the rest of the body is not read: close
    return kind(status=error.status, body=body, content_type=_JSON, headers=headers)


async def chat(http_request: web.Request) -> web.StreamResponse:
    return await serve(http_request, "chat")


async def embeddings(http_request: web.Request) -> web.StreamResponse:
    return await serve(http_request, "embeddings")


async def serve(http_request: web.Request, kind: str, dialect=None) -> web.StreamResponse:
    gw: Gateway = http_request.app[GATEWAY]
    ex = Exchange(gw, kind if dialect is None else dialect.name)
    metrics = gw.metrics
    metrics.in_flight += 1
    try:
        return await _exchange(http_request, gw, ex, kind, dialect)
    except ProxyError as error:
        ex.fail(error)
        return error_response(error, ex.id, dialect)
    except asyncio.CancelledError:
        ex.status = "client_aborted"
        ex.http_status = 499
        ex.finish()  # now: a cancelled task may not get another turn
        raise
    finally:
        metrics.in_flight -= 1
        ex.release()
        # The record is built on the next loop turn, after aiohttp has written the answer.
        asyncio.get_running_loop().call_soon(ex.finish)


async def _exchange(http_request: web.Request, gw: Gateway, ex: Exchange, kind: str, dialect) -> web.StreamResponse:
    admission = http_request.app[ADMISSION]
    admission.admit(http_request.content_length)  # in-flight, memory: fast 503s
    caller = await gw.auth.authenticate(http_request.headers, http_request.get(journal.RESOLVED))
    ex.caller_id = caller.id
    body = await read_body(http_request, gw.cfg.limits.max_body_bytes, admission.bodies)
    request, translation = _decode(http_request, body, kind, dialect, ex)
    if (rule := gw.quota.rule(caller)) is not None:  # per-key RPM, TPM, budget: 429 when reached
        await gw.quota.admit(caller.id, rule, ex)
    autoroute.apply(gw, request, caller, http_request.headers, ex)  # `auto`: the model to route
    cache_key = gw.cache.key(http_request.headers, request, caller.id)  # None unless asked for
    if cache_key is not None and (hit := await gw.cache.answer(http_request, cache_key, request, ex,
                                                               dialects.replayed(dialect, translation, ex.id))):
        return hit
    routes = gw.router.routes(request.model, caller.models, request.kind)
    if dialect is not None:
        routes = dialects.fit(request, translation, routes)
    opened = await dispatch(gw.upstream, routes, request, ex)
    ex.model_served = opened.route.model
    if dialect is not None and dialects.passthrough(request, opened.route):
        cache_key = None  # the cache keeps chat answers; this one is in the dialect's own wire
    if request.stream:
        tap = gw.cache.tap(opened) if cache_key is not None else None  # chat events, before any translation
        if dialect is not None:
            dialects.adopt_stream(opened, request, dialect, translation, ex.id)
        return await _stream(http_request, gw, ex, opened, cache_key, tap)
    ex.release()
    parsed = opened.parsed
    ex.usage = parsed.usage
    if parsed.model:
        ex.model_served = parsed.model
    ex.first_byte()
    headers = {"X-Request-Id": ex.id}
    if ex.rule is not None:
        await gw.quota.settle(ex)  # counted before the answer completes: the next request sees it
    if cache_key is not None:
        gw.cache.keep(cache_key, parsed.body, ex)
        headers["X-Cache"] = "miss"
    if dialect is None:
        return web.Response(body=parsed.body, content_type=_JSON, headers=headers)
    headers[dialect.id_header] = ex.id
    return web.Response(body=dialects.answer(opened, request, dialect, translation), content_type=_JSON,
                        headers=headers)


def _decode(http_request: web.Request, body: bytes, kind: str, dialect, ex: Exchange):
    """(the chat request, None) or, for another API's wire, (its chat request, what its answer needs)."""
    ex.prompt_estimate = estimate_tokens(len(body))
    if dialect is None:
        request, translation = decoding.parse(body, kind), None
    else:
        request, translation = dialect.request(body, http_request.headers)
        translation.prompt_estimate = ex.prompt_estimate
    ex.model_requested = request.model
    ex.stream = request.stream
    ex.tags = tagging.merge(request.tags, http_request.headers)
    return request, translation


async def _stream(http_request: web.Request, gw: Gateway, ex: Exchange, opened, cache_key: str | None, tap):
    provider = opened.route.provider
    idle = (provider.item.timeouts and provider.item.timeouts.idle) or gw.cfg.timeouts.idle
    dialect = opened.parser if isinstance(opened.parser, dialects.DialectStream) else None
    out = await relay(http_request, opened, ex, idle, gw.cfg.timeouts.max_stream, dialect)
    if ex.rule is not None:
        await gw.quota.settle(ex)
    if tap is not None:
        gw.cache.keep_stream(cache_key, tap, ex)
    return out
