"""The Messages API's routes: `…/v1/messages`, `…/v1/messages/count_tokens`, `…/v1/models`.

`messages` is the chat pipeline with the Messages dialect (proxy.dialects.messages). Counting
tokens is never billed and never recorded: a provider that speaks Messages itself is asked; the
count is the gateway's estimate for any other, for a model no provider serves, and when the
provider cannot answer (a count is advice: a client such as Claude Code must not fail on it). Every error on these routes is in Anthropic's shape
(the error boundary in proxy.app frames those raised before a handler runs).
"""

from __future__ import annotations

import datetime

import orjson
from aiohttp import web

from proxy.dialects import messages as dialect
from proxy.edge.limits import ADMISSION
from proxy.edge.server import error_response
from proxy.errors import NotFound, ProxyError, Unavailable, UpstreamError, UpstreamTimeout
from proxy.pipeline import serve as chat
from proxy.pipeline.outcome import new_id
from proxy.pipeline.parts import PARTS, Parts
from proxy.providers.base import estimate_tokens, speaks
from proxy.upstream.attempts import Attempts
from proxy.upstream.dispatch import dispatch

DIALECT = dialect.DIALECT
_CREATED = datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC).isoformat().replace("+00:00", "Z")


async def create(http_request: web.Request) -> web.StreamResponse:
    return await chat.serve(http_request, "chat", DIALECT)


async def count_tokens(http_request: web.Request) -> web.Response:
    parts = http_request.app[PARTS]
    # the attempts' bookkeeping only (the provider's in-flight count): never a record
    attempts = Attempts(new_id(), parts.router, parts.metrics)
    try:
        return await _count(http_request, parts, attempts)
    except ProxyError as error:
        return error_response(error, attempts.request_id, DIALECT)
    finally:
        attempts.release()


async def _count(http_request: web.Request, parts: Parts, attempts: Attempts) -> web.Response:
    admission = http_request.app[ADMISSION]
    admission.admit(http_request.content_length)
    caller = await parts.auth.authenticate(http_request.headers)
    body = await chat.read_body(http_request, parts.cfg.limits.max_body_bytes, admission.bodies)
    request, _ = DIALECT.request(body, http_request.headers, operation="count_tokens")
    headers = {"X-Request-Id": attempts.request_id, DIALECT.id_header: attempts.request_id}
    try:
        routes = parts.router.routes(request.model, caller.models, request.kind)
        native = [route for route in routes if speaks(route.provider.adapter.caps, request)]
        if native:
            opened = await dispatch(parts.upstream, native, request, attempts)
            return web.Response(body=opened.parsed.body, content_type="application/json", headers=headers)
    except (NotFound, UpstreamError, UpstreamTimeout, Unavailable):
        pass  # a model the gateway does not know, or a provider that cannot count now: a count is advice
    return web.Response(body=orjson.dumps({"input_tokens": estimate_tokens(len(body))}),
                        content_type="application/json", headers=headers)


