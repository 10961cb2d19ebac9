"""The long-lived parts the request pipeline works with, typed; the gateway builds them once."""

from __future__ import annotations

from aiohttp import web

from proxy.catalog.prices import Prices
from proxy.config import Config
from proxy.metrics.prometheus import Metrics
from proxy.pipeline.auth import Authenticator
from proxy.pipeline.cache import ResponseCache
from proxy.pipeline.quota import Quota
from proxy.telemetry.batcher import Batcher
from proxy.upstream.dispatch import Upstream
from proxy.upstream.registry import Registry
from proxy.upstream.router import Router


class Parts:
    def __init__(self, cfg: Config, auth: Authenticator, quota: Quota, cache: ResponseCache, router: Router,
                 registry: Registry, upstream: Upstream, prices: Prices, metrics: Metrics, batcher: Batcher) -> None:
        self.cfg = cfg
        self.auth = auth
        self.quota = quota
        self.cache = cache
        self.router = router
        self.registry = registry
        self.upstream = upstream
        self.prices = prices
        self.metrics = metrics
        self.batcher = batcher  # takes each usage record without waiting


PARTS = web.AppKey("pipeline_parts", Parts)
