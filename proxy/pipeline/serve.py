"""The one request pipeline: admit, authenticate, read and decode the body, check the caller's
limits, route (`auto` included), answer from the cache or dispatch to a provider, relay the
answer, and end the request in one place (`_end`): its usage record, its metrics, and its count
against the caller's limits, for every path (answered, refused, failed, client gone, cache hit).

The stages return what they found; `_Found` keeps it until the end, where it becomes one
immutable `Outcome` (proxy.pipeline.outcome). `chat/completions` and `embeddings` come in through
here, and so do the inbound dialects (proxy.dialects): `serve(http_request, "chat", dialect)`
decodes the body with the dialect, answers and fails in its wire.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from proxy import dialects
from proxy.dialects import completions as decoding
from proxy.dialects.base import Dialect
from proxy.edge.limits import ADMISSION, BodyBuffer
from proxy.edge.server import GuardedHandler, error_response
from proxy.errors import PayloadTooLarge, ProxyError
from proxy.net.turn import end_of_turn
from proxy.pipeline import autoroute
from proxy.pipeline.auth import Caller
from proxy.pipeline.cache import Entry
from proxy.pipeline.outcome import Outcome, new_id, spent, to_record
from proxy.pipeline.parts import PARTS, Parts
from proxy.pipeline.relay import Relay
from proxy.providers.base import ChatRequest, estimate_tokens
from proxy.state.base import Rule
from proxy.telemetry import journal
from proxy.telemetry import tags as tagging
from proxy.upstream.attempts import Attempts
from proxy.upstream.dispatch import Opened, dispatch

_JSON = "application/json"


async def read_body(http_request: web.Request, limit: int, bodies: BodyBuffer) -> bytes:
    """The whole request body, read within the global budget for bodies being read (many slow uploads at once)."""
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


async def chat(http_request: web.Request) -> web.StreamResponse:
    return await serve(http_request, "chat")


async def embeddings(http_request: web.Request) -> web.StreamResponse:
    return await serve(http_request, "embeddings")


async def serve(http_request: web.Request, kind: str, dialect: Dialect | None = None) -> web.StreamResponse:
    parts = http_request.app[PARTS]
    found = _Found(new_id(), kind if dialect is None else dialect.name)
    attempts = found.attempts = Attempts(found.id, parts.router, parts.metrics)
    metrics = parts.metrics
    metrics.in_flight += 1
    try:
        return await _run(http_request, parts, found, kind, dialect)
    except ProxyError as error:
        # its numbers only: the error's traceback holds the frames of the request (a body up to
        # the size cap among their locals), which must go now, not at the next garbage collection
        found.error = (error.status, error.code, error.type)
        return error_response(error, found.id, dialect)
    except asyncio.CancelledError:
        found.aborted = True
        _end(parts, found)  # now: a cancelled task may not get another turn
        raise
    finally:
        metrics.in_flight -= 1
        attempts.release()
        if not found.aborted:
            # The record is built once the answer has left: aiohttp writes it after this returns,
            # and the server holds it to the end of this turn (proxy.net.turn). Scheduled now as a
            # callback, it would come before the write and hold the answer back by its work.
            end_of_turn().after(_end, parts, found)


async def _run(http_request: web.Request, parts: Parts, found: _Found, kind: str,
               dialect: Dialect | None) -> web.StreamResponse:
    admission = http_request.app[ADMISSION]
    admission.admit(http_request.content_length)  # in-flight, memory: fast 503s
    caller = found.caller = await parts.auth.authenticate(http_request.headers, http_request.get(journal.RESOLVED))
    body = await read_body(http_request, parts.cfg.limits.max_body_bytes, admission.bodies)
    request, translation = _decode(http_request, body, kind, dialect, found)
    if (rule := parts.quota.rule(caller)) is not None:  # per-key RPM, TPM, budget: 429 when reached
        await parts.quota.admit(caller.id, rule)
        found.rule = rule
    found.baseline = autoroute.apply(parts, request, caller, http_request.headers)  # `auto`: the model to route
    cache_key = parts.cache.key(http_request.headers, request, caller.id)  # None unless asked for
    if cache_key is not None and (entry := await parts.cache.lookup(cache_key)) is not None:
        found.hit, found.first_byte_at = entry, time.monotonic()
        return await parts.cache.answer(http_request, entry, request, found.id,
                                        dialects.replayed(dialect, translation, found.id))
    routes = parts.router.routes(request.model, caller.models, request.kind)
    if dialect is not None:
        routes = dialects.fit(request, translation, routes)
    opened = found.opened = await dispatch(parts.upstream, routes, request, found.attempts)
    if dialect is not None and dialects.passthrough(request, opened.route):
        cache_key = None  # the cache keeps chat answers; this one is in the dialect's own wire
    if request.stream:
        tap = parts.cache.tap(opened) if cache_key is not None else None  # chat events, before any translation
        if dialect is not None:
            dialects.adopt_stream(opened, request, dialect, translation, found.id)
        return await _stream(http_request, parts, found, opened, cache_key, tap)
    found.attempts.release()
    parsed = opened.parsed
    found.first_byte_at = time.monotonic()
    headers = {"X-Request-Id": found.id}
    outcome = found.outcome = _outcome(found)
    await _charge(parts, found, outcome)  # counted before the answer completes: the next request sees it
    if cache_key is not None:
        parts.cache.keep(cache_key, parsed.body, outcome.model_served, outcome.usage)
        headers["X-Cache"] = "miss"
    if dialect is None:
        return web.Response(body=parsed.body, content_type=_JSON, headers=headers)
    headers[dialect.id_header] = found.id
    return web.Response(body=dialects.answer(opened, request, dialect, translation), content_type=_JSON,
                        headers=headers)


def _decode(http_request: web.Request, body: bytes, kind: str, dialect: Dialect | None, found: _Found):
    """(the chat request, None) or, for another API's wire, (its chat request, what its answer needs)."""
    found.prompt_estimate = estimate_tokens(len(body))
    if dialect is None:
        request, translation = decoding.parse(body, kind), None
    else:
        request, translation = dialect.request(body, http_request.headers)
        translation.prompt_estimate = found.prompt_estimate
    found.request = request
    found.model_requested = request.model  # before cost routing replaces `auto`
    found.tags = tagging.merge(request.tags, http_request.headers, http_request.get(journal.HEADER_TAGS))
    return request, translation


async def _stream(http_request: web.Request, parts: Parts, found: _Found, opened: Opened, cache_key: str | None,
                  tap) -> web.StreamResponse:
    provider = opened.route.provider
    idle = (provider.item.timeouts and provider.item.timeouts.idle) or parts.cfg.timeouts.idle
    dialect = opened.parser if isinstance(opened.parser, dialects.DialectStream) else None
    relay = found.relay = Relay(opened, found.id, found.attempts, found.prompt_estimate)
    out = await relay.run(http_request, idle, parts.cfg.timeouts.max_stream, dialect)
    outcome = found.outcome = _outcome(found)
    await _charge(parts, found, outcome)
    if tap is not None and outcome.status == "completed":
        parts.cache.keep_stream(cache_key, tap, outcome.model_served, outcome.usage)
    return out


class _Found:
    """What the stages found for one request, kept by this module until the request ends."""

    __slots__ = ("id", "endpoint", "started", "wall", "attempts", "caller", "request", "model_requested", "tags",
                 "prompt_estimate", "rule", "baseline", "hit", "opened", "relay", "first_byte_at", "error",
                 "aborted", "outcome", "charged")

    def __init__(self, request_id: str, endpoint: str) -> None:
        self.id = request_id
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.wall = time.time()
        self.attempts: Attempts | None = None
        self.caller: Caller | None = None
        self.request: ChatRequest | None = None
        self.model_requested = ""
        self.tags: list[str] = []
        self.prompt_estimate = 0
        self.rule: Rule | None = None  # the caller's limits, None when it has none
        self.baseline: str | None = None  # what savings compare against (cost routing)
        self.hit: Entry | None = None  # the cache's answer
        self.opened: Opened | None = None  # the provider's answer, before any byte reached the client
        self.relay: Relay | None = None
        self.first_byte_at: float | None = None
        self.error: tuple[int, str | None, str] | None = None  # the error answered: status, code, type
        self.aborted = False  # the client went away (the handler was cancelled)
        self.outcome: Outcome | None = None  # built before the answer completed, on success
        self.charged = False  # counted against the caller's limits before the answer completed


def _status(found: _Found) -> tuple[str, int, str | None]:
    """The record's status, the HTTP status and the error type."""
    if found.aborted:
        return "client_aborted", 499, None
    relay = found.relay
    status, error_type = ("completed", None) if relay is None else (relay.status, relay.error_type)
    if found.error is None:
        return status, 200, error_type
    http_status, code, kind = found.error
    if status == "completed":
        # a provider's overload is the provider failing, like a 502, not the gateway refusing
        upstream = http_status in (502, 504) or code == "upstream_overloaded"
        status = "upstream_timeout" if http_status == 504 else "upstream_error" if upstream else "rejected"
    return status, http_status, code or kind


def _outcome(found: _Found) -> Outcome:
    status, http_status, error_type = _status(found)
    request, attempts, hit, opened, relay = found.request, found.attempts, found.hit, found.opened, found.relay
    served, usage, estimated = None, None, False
    if hit is not None:
        served, usage = hit.model, hit.usage
    elif opened is not None:
        served = opened.route.model
        if relay is not None:
            model, usage, estimated = relay.usage()
            served = model or served
        elif opened.parsed is not None:
            usage = opened.parsed.usage
            served = opened.parsed.model or served
    first_byte_at = relay.first_byte_at if relay is not None else found.first_byte_at
    caller = found.caller
    return Outcome(
        id=found.id, endpoint=found.endpoint, started=found.started, wall=found.wall, status=status,
        http_status=http_status, error_type=error_type, caller_id=caller.id if caller else None,
        model_requested=found.model_requested, model_served=served,
        stream=request.stream if request is not None else False, tags=found.tags,
        prompt_estimate=found.prompt_estimate, savings_baseline=found.baseline, provider=attempts.provider,
        key_last4=attempts.key_last4, attempts=attempts.count, failures=attempts.failures,
        upstream_seconds=attempts.upstream_seconds(), usage=usage, estimated=estimated,
        ttft=None if first_byte_at is None else first_byte_at - found.started, cache_hit=hit is not None)


async def _charge(parts: Parts, found: _Found, outcome: Outcome) -> None:
    """Count a request that was answered against its caller's limits, before the answer completes."""
    rule = found.rule
    if rule is None or found.charged:
        return
    found.charged = True
    tokens, cost = spent(outcome, parts.prices)
    await parts.quota.charge(outcome.caller_id, rule, tokens, cost)


def _end(parts: Parts, found: _Found) -> None:
    """The one place a request ends: its record, its metrics, and its count when not yet charged."""
    if found.outcome is None or found.aborted or found.error is not None:
        found.outcome = _outcome(found)
    outcome = found.outcome
    latency = time.monotonic() - outcome.started
    record = to_record(outcome, parts.prices, parts.cfg.castai.cluster_id, latency)
    parts.batcher.put(record)
    if found.rule is not None and not found.charged and not outcome.cache_hit:
        found.charged = True
        parts.quota.charge_later(outcome.caller_id, found.rule, record.total_tokens, record.cost_usd)
    parts.metrics.finished(outcome, record, latency, parts.registry)
