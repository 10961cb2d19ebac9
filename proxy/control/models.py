"""`GET …/models`: the models the caller may use, in OpenAI's list shape (the admin key: all of them)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from proxy.gateway import GATEWAY
from proxy.pipeline import messages_api as messages

_CREATED = 1_700_000_000  # providers do not tell; a fixed time keeps the list stable


async def list_models(http_request: web.Request) -> web.Response:
    if messages.wants_list(http_request.headers):  # `/v1/models` is the Messages API's too
        return await messages.models(http_request)
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
