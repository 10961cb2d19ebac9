"""The gateway's long-lived parts, built once per process and shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from proxy.auth import Authenticator
from proxy.config import Config
from proxy.metrics import Metrics
from proxy.registry import Registry
from proxy.router import Router
from proxy.telemetry.batcher import Batcher
from proxy.telemetry.prices import Prices
from proxy.telemetry.store import UsageStore
from proxy.upstream import Upstream
from proxy.vault import Vault


class Gateway:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        data = cfg.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.vault = Vault(cfg.secret_key, data)
        self.registry = Registry(cfg.providers, self.vault, str(data / "registry.db"),
                                 allow_private=cfg.security.allow_private_upstreams)
        self.router = Router(self.registry, cfg.routing)
        self.auth = Authenticator(cfg)
        self.prices = Prices()
        self.store = UsageStore(str(data / "usage.db"))
        self.batcher = Batcher([self.store], batch_size=cfg.telemetry.batch_size,
                               flush_ms=cfg.telemetry.flush_ms, queue_size=cfg.telemetry.queue_size,
                               metrics=self.metrics)
        self.upstream = Upstream(cfg, self.router, self.metrics)
        self.ready = False
        self.draining = False

    async def start(self) -> None:
        await self.upstream.start()
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.upstream.close()
        await self.batcher.close()
        self.store.close()
        self.registry.close()


GATEWAY = web.AppKey("gateway", Gateway)
