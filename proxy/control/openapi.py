"""`GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP surface (docs/dialects.md, endpoints).

The document is a file in the package (`proxy/data/openapi.json`), read once and served as
bytes; tests/routes/test_openapi.py checks it names every route the app serves.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web


@functools.cache
def raw() -> bytes:
    return resources.files("proxy.data").joinpath("openapi.json").read_bytes()


async def document(http_request: web.Request) -> web.Response:
    return web.Response(body=raw(), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})
