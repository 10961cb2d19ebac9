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
from proxy.errors import InvalidRequest, NotFound, ProxyError, Unavailable, UpstreamError, UpstreamTimeout
from proxy.gateway import GATEWAY
from proxy.pipeline import serve as chat
from proxy.pipeline.outcome import Exchange, new_id
from proxy.providers.base import estimate_tokens, speaks
from proxy.upstream.dispatch import dispatch

DIALECT = dialect.DIALECT
_CREATED = datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC).isoformat().replace("+00:00", "Z")


async def create(http_request: web.Request) -> web.StreamResponse:
    return await chat.serve(http_request, "chat", DIALECT)


async def count_tokens(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    ex = Exchange(gw, "count_tokens")  # for the attempt's bookkeeping only: never finished, never a record
    try:
        return await _count(http_request, gw, ex)
    except ProxyError as error:
        return chat.error_response(error, ex.id, DIALECT)
    finally:
        ex.release()


async def _count(http_request: web.Request, gw, ex: Exchange) -> web.Response:
    admission = http_request.app[ADMISSION]
    admission.admit(http_request.content_length)
    caller = await gw.auth.authenticate(http_request.headers)
    body = await chat.read_body(http_request, gw.cfg.limits.max_body_bytes, admission.bodies)
    request, _ = DIALECT.request(body, http_request.headers, operation="count_tokens")
    headers = {"X-Request-Id": ex.id, DIALECT.id_header: ex.id}
    try:
        routes = gw.router.routes(request.model, caller.models, request.kind)
        native = [route for route in routes if speaks(route.provider.adapter.caps, request)]
        if native:
            opened = await dispatch(gw.upstream, native, request, ex)
            return web.Response(body=opened.parsed.body, content_type="application/json", headers=headers)
    except (NotFound, UpstreamError, UpstreamTimeout, Unavailable):
        pass  # a model the gateway does not know, or a provider that cannot count now: a count is advice
    return web.Response(body=orjson.dumps({"input_tokens": estimate_tokens(len(body))}),
                        content_type="application/json", headers=headers)


def wants_list(headers) -> bool:
    """An Anthropic client asks `/v1/models` (it always sends its API version)."""
    return "anthropic-version" in headers


async def models(http_request: web.Request) -> web.Response:
    """The models this caller may use, in Anthropic's list shape (`limit`, `after_id`, `before_id`)."""
    gw = http_request.app[GATEWAY]
    try:
        caller = await gw.auth.authenticate(http_request.headers)
        limit = _limit(http_request.query.get("limit"))
    except ProxyError as error:
        return chat.error_response(error, new_id(), DIALECT)
    ids = [model for model in sorted(gw.registry.by_model) if caller.models is None or model in caller.models]
    after, before = http_request.query.get("after_id"), http_request.query.get("before_id")
    if after in ids:
        ids = ids[ids.index(after) + 1:]
    if before in ids:
        ids = ids[:ids.index(before)]
        ids, more = ids[-limit:], len(ids) > limit
    else:
        ids, more = ids[:limit], len(ids) > limit
    data = [{"type": "model", "id": model, "display_name": model, "created_at": _CREATED} for model in ids]
    page = {"data": data, "has_more": more, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
    return web.Response(body=orjson.dumps(page), content_type="application/json")


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
    return int(value)
