"""The floor a gateway is measured against: a bare aiohttp passthrough on uvloop.

No auth, routing, records or logging; one ClientSession; the body forwarded as bytes and the
answer streamed back as it arrives. `python -m bench.passthrough --upstream http://127.0.0.1:P`
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].post(url, data=body, headers={"Content-Type": "application/json"}) as up:
        kind = up.headers.get("Content-Type", "application/json")
        if not kind.startswith("text/event-stream"):
            return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": kind})
        out = web.StreamResponse(status=up.status, headers={"Content-Type": kind, "Cache-Control": "no-cache"})
        await out.prepare(request)
        async for chunk in up.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out


async def serve(host: str, port: int, upstream: str) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def session(app: web.Application):
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/{tail:.*}", forward)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    print(f"LISTENING {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="origin of the upstream, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
