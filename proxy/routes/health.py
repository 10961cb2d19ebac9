"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from proxy.gateway import GATEWAY
from proxy.metrics import CONTENT_TYPE


async def healthz(http_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    if gw.ready and not gw.draining:
        return web.json_response({"status": "ready"})
    state = "draining" if gw.draining else "starting"
    return web.json_response({"status": state}, status=503, headers={"Retry-After": "1"})


async def metrics(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
