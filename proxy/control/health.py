"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from proxy.edge import supervisor
from proxy.gateway import GATEWAY
from proxy.metrics.prometheus import CONTENT_TYPE


async def healthz(http_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(http_request: web.Request) -> web.Response:
    """Ready when this gateway is ready, not draining, and (with `--workers N`) all N workers
    serve: while one is down and being restarted the pod takes less traffic elsewhere."""
    gw = http_request.app[GATEWAY]
    short = supervisor.short()
    if gw.ready and not gw.draining and short is None:
        return web.json_response({"status": "ready"})
    if gw.draining or not gw.ready:
        body = {"status": "draining" if gw.draining else "starting"}
    else:
        body = {"status": "degraded", "workersServing": short[0], "workers": short[1]}
    return web.json_response(body, status=503, headers={"Retry-After": "1"})


async def metrics(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
