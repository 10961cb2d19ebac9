"""GET /ui: the usage and savings dashboard (docs/dialects.md, endpoints), static files shipped in `proxy/ui/`.

The page and its assets hold no data, so they need no key; the page asks for the admin key
itself and sends it as `X-API-Key` to the data calls (`/v1/llm/usage`, `/v1/llm/providers`).
The files are read once, served from memory with an ETag, and only names listed in the package
are served: no path from the URL ever reaches the file system. The Content-Security-Policy
allows only this origin's own scripts, styles and fetches.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from aiohttp import web

from proxy.errors import NotFound

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (cheap: ETag), so an upgraded gateway serves its new page
}


class Asset:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


@functools.cache
def assets() -> dict[str, Asset]:
    """The servable files of `proxy.ui`, by name."""
    found = {}
    for entry in resources.files("proxy.ui").iterdir():
        kind = _TYPES.get("." + entry.name.rpartition(".")[2])
        if kind and entry.is_file():
            found[entry.name] = Asset(entry.read_bytes(), kind)
    return found


def _serve(http_request: web.Request, name: str) -> web.Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"no such file: /ui/{name}")
    headers = {**_HEADERS, "ETag": asset.etag}
    if asset.etag in http_request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


async def page(http_request: web.Request) -> web.Response:
    return _serve(http_request, "index.html")


async def asset(http_request: web.Request) -> web.Response:
    name = http_request.match_info["name"]
    if name in ("", "index.html"):  # → /ui: the page's relative links are written for /ui
        raise web.HTTPFound("../ui")
    return _serve(http_request, name)
