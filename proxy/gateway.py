"""The gateway's long-lived parts, built once per process and shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from proxy import state
from proxy.catalog.prices import Prices
from proxy.config import Config
from proxy.metrics.prometheus import Metrics
from proxy.pipeline.auth import Authenticator
from proxy.pipeline.cache import ResponseCache
from proxy.pipeline.parts import Parts
from proxy.pipeline.quota import Quota
from proxy.pipeline.verify import Verifier
from proxy.telemetry.delivery import UsagePipeline
from proxy.upstream.dispatch import Upstream
from proxy.upstream.registry import Registry
from proxy.upstream.router import Router
from proxy.upstream.vault import Vault


class Gateway:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        data = cfg.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.vault = Vault(cfg.secret_key, data)
        self.state = state.open_store(cfg)  # shared state: embedded, or Redis with STORE_URL
        self.registry = Registry(cfg.providers, self.vault, str(data / "registry.db"),
                                 allow_private=cfg.security.allow_private_upstreams, shared=self.state.providers)
        self.router = Router(self.registry, cfg.routing)
        verifier = Verifier(cfg, self.state.cache("verify")) if cfg.auth.castai_verification else None
        self.auth = Authenticator(cfg, verifier)
        self.quota = Quota(cfg, self.state)  # per-key RPM, TPM and budget
        self.cache = ResponseCache(cfg.cache, self.state)
        prices = Prices(cfg.prices)
        self.telemetry = UsagePipeline(cfg, data, self.metrics)  # spool, sinks, heartbeat
        self.store = self.telemetry.store
        self.batcher = self.telemetry.batcher
        self.upstream = Upstream(cfg, self.router, self.metrics)
        self.parts = Parts(cfg, self.auth, self.quota, self.cache, self.router, self.registry, self.upstream,
                           prices, self.metrics, self.batcher)  # what the request pipeline works with
        self.ready = False
        self.draining = False

    @property
    def prices(self) -> Prices:
        return self.parts.prices

    @prices.setter
    def prices(self, value: Prices) -> None:  # one price table: a new one reaches the pipeline too
        self.parts.prices = value

    async def start(self) -> None:
        self.metrics.start(self.router)  # circuit states, and the copy the other workers read
        await self._connect_state()  # registry, budgets and circuits loaded before traffic
        await self.upstream.start()
        await self.telemetry.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.metrics.stop()
        await self.upstream.close()
        await self.telemetry.stop()  # flushes for drain.flushSeconds; the rest stays spooled
        await self._disconnect_state()
        self.registry.close()

    async def _connect_state(self) -> None:
        """Start the store and tie the parts that mirror shared state to its change topics."""
        store, registry, router = self.state, self.registry, self.router
        if store.providers is not None or registry.table is not None:
            store.subscribe("providers", lambda _data: registry.refresh())
        if registry.table is not None:  # the embedded store: other workers write the same file
            store.watch("providers", registry.table)
        store.subscribe("budgets", self.quota.reload)
        if store.shared:
            async def circuit(data: dict | None) -> None:
                found = await store.circuits() if data is None else {data["name"]: float(data["seconds"])}
                for name, seconds in found.items():
                    router.open_for(name, seconds)

            store.subscribe("circuit", circuit)
            router.on_open = lambda name, seconds: store.spawn(store.open_circuit(name, seconds))
        await store.start()
        fallback = getattr(store, "fallback", None)
        if fallback is not None:
            self.metrics.registry.register(fallback.collector())
        await self.quota.reload(None)
        await self.cache.start()
        if self.auth.verifier is not None:
            await self.auth.verifier.start()

    async def _disconnect_state(self) -> None:
        if self.auth.verifier is not None:
            await self.auth.verifier.close()
        await self.cache.close()
        await self.state.close()


GATEWAY = web.AppKey("gateway", Gateway)
