"""The Cast AI API: the usage sink and the gateway's heartbeat. Both are off without an API key.

    POST {API_URL}/ai-optimizer/v1beta/logs:ingest            usage records as OTLP/JSON logs
    POST {API_URL}/ai-optimizer/v1beta/components:heartbeat   every minute: this gateway runs

Both send `X-API-Key: {API_KEY}`; the ingest body is gzip-compressed (`proxy.telemetry.otlp`).

The heartbeat path is our choice, as Cast AI documents no heartbeat for the proxy: a custom
method beside `logs:ingest`, in the style of `api-keys:verify`. Its JSON body:
    {"component": "ai-enabler-proxy", "version": "0.1.0", "clusterId": "…", "status": "RUNNING",
     "instanceId": "<host>/<pid>", "startedAt": "<RFC 3339>", "time": "<RFC 3339>"}
A failed heartbeat is logged when the state changes and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket

import aiohttp
import orjson
import structlog

from proxy import __version__
from proxy.config import Config, resolve_secret
from proxy.net import egress
from proxy.telemetry.otlp import SERVICE, OtlpSink

log = structlog.get_logger("proxy.telemetry")

INGEST_PATH = "/ai-optimizer/v1beta/logs:ingest"
HEARTBEAT_PATH = "/ai-optimizer/v1beta/components:heartbeat"


def api_key(cfg: Config) -> str | None:
    return resolve_secret(cfg.castai.api_key)


def sink(cfg: Config, dead_letter=None, metrics=None) -> OtlpSink:
    return OtlpSink("castai", cfg.castai.api_url.rstrip("/") + INGEST_PATH, cfg, headers={"X-API-Key": api_key(cfg)},
                    dead_letter=dead_letter, metrics=metrics)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Heartbeat:
    def __init__(self, cfg: Config, metrics=None) -> None:
        self.url = cfg.castai.api_url.rstrip("/") + HEARTBEAT_PATH
        self.via = egress.options(cfg.egress, self.url)  # forward proxy and TLS, as for every outbound call
        self.headers = {"X-API-Key": api_key(cfg), "Content-Type": "application/json",
                        "User-Agent": f"{SERVICE}/{__version__}"}
        self.interval = cfg.telemetry.heartbeat_seconds
        self.timeout = min(cfg.telemetry.export_timeout, self.interval)
        self.metrics = metrics
        self.body = {"component": SERVICE, "version": __version__, "clusterId": cfg.castai.cluster_id,
                     "status": "RUNNING", "instanceId": f"{socket.gethostname()}/{os.getpid()}",
                     "startedAt": _now()}
        self.healthy: bool | None = None
        self.session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="castai-heartbeat")

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def beat(self) -> bool:
        body = orjson.dumps({**self.body, "time": _now()})
        try:
            async with self.session.post(self.url, data=body, headers=self.headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout), **self.via) as resp:
                ok, why = 200 <= resp.status < 300, f"http_{resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, why = False, type(exc).__name__
        if self.metrics is not None:
            self.metrics.heartbeats.labels("ok" if ok else "error").inc()
        if ok != self.healthy:
            (log.info if ok else log.warning)("castai_heartbeat", ok=ok, reason=None if ok else why, url=self.url)
        self.healthy = ok
        return ok

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
