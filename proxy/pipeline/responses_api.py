"""The Responses API's route, `…/responses`: the chat pipeline with the Responses dialect.

Errors keep OpenAI's shape, as on the chat routes. `dialects.responses.hostedTools` picks whether a
hosted tool a translation cannot offer is refused or dropped (proxy.dialects.responses).
"""

from __future__ import annotations

from aiohttp import web

from proxy.dialects import responses as dialect
from proxy.pipeline import serve as chat
from proxy.pipeline.parts import PARTS


async def create(http_request: web.Request) -> web.StreamResponse:
    drop = http_request.app[PARTS].cfg.dialects.responses.hosted_tools == "drop"
    return await chat.serve(http_request, "chat", dialect.DROPPING if drop else dialect.DIALECT)
