"""`GET …/models`: the models the caller may use, in OpenAI's list shape (the admin key: all of them)."""

from __future__ import annotations

import datetime

import msgspec
import orjson
from aiohttp import web

from proxy.dialects.messages import DIALECT
from proxy.edge.server import error_response
from proxy.errors import InvalidRequest, ProxyError
from proxy.gateway import GATEWAY
from proxy.pipeline.outcome import new_id

_MESSAGES_CREATED = datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC).isoformat().replace("+00:00", "Z")
_CREATED = 1_700_000_000  # providers do not tell; a fixed time keeps the list stable


async def list_models(http_request: web.Request) -> web.Response:
    if wants_list(http_request.headers):  # `/v1/models` is the Messages API's too
        return await messages_models(http_request)
    gw = http_request.app[GATEWAY]
    caller = await gw.auth.reader(http_request.headers)
    data = []
    for model, providers in sorted(gw.registry.by_model.items()):
        if caller.models is not None and model not in caller.models:
            continue
        data.append({"id": model, "object": "model", "created": _CREATED,
                     "owned_by": providers[0].item.supported_provider.lower()})
    return web.Response(body=msgspec.json.encode({"object": "list", "data": data}),
                        content_type="application/json")


def wants_list(headers) -> bool:
    """An Anthropic client asks `/v1/models` (it always sends its API version)."""
    return "anthropic-version" in headers


async def messages_models(http_request: web.Request) -> web.Response:
    """The models this caller may use, in Anthropic's list shape (`limit`, `after_id`, `before_id`)."""
    gw = http_request.app[GATEWAY]
    try:
        caller = await gw.auth.authenticate(http_request.headers)
        limit = _limit(http_request.query.get("limit"))
    except ProxyError as error:
        return error_response(error, new_id(), DIALECT)
    ids = [model for model in sorted(gw.registry.by_model) if caller.models is None or model in caller.models]
    after, before = http_request.query.get("after_id"), http_request.query.get("before_id")
    if after in ids:
        ids = ids[ids.index(after) + 1:]
    if before in ids:
        ids = ids[:ids.index(before)]
        ids, more = ids[-limit:], len(ids) > limit
    else:
        ids, more = ids[:limit], len(ids) > limit
    data = [{"type": "model", "id": model, "display_name": model, "created_at": _MESSAGES_CREATED} for model in ids]
    page = {"data": data, "has_more": more, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
    return web.Response(body=orjson.dumps(page), content_type="application/json")


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
    return int(value)
