"""Shared state: one interface (`proxy.state.base.Store`), two implementations chosen by STORE_URL.

    unset, or sqlite:///path      embedded: this process's memory; budgets and spend in SQLite
                                  (`dataDir/state.db` by default); for a sidecar or one replica;
                                  its workers see each other's changes within 1 s
    redis://host:port/db          Redis: registry, limits, budgets, circuits and caches shared by
    rediss://… [?prefix=p]        every replica; changes announced on pub/sub (live within 1 s)
    redis+sentinel://h1:26379,h2:26379/mymaster/db     the same through Sentinel (failover)
    redis+cluster://h1:6379[,h2:6379]                  the same on a Redis Cluster
    (rediss+sentinel://, rediss+cluster://: with TLS; see proxy.state.clients)

While Redis cannot be reached, `state.outage` decides (proxy.state.outage): `local` counts
limits in each replica and reconciles when it is back, `refuse` answers 503.

In Redis mode provider keys are sealed by the vault before they are stored, so every replica
must be given the same PROXY_SECRET_KEY. CACHE_URL (`redis://…` or `memory://`) moves the
caches elsewhere; by default they live with the store.
"""

from __future__ import annotations

from proxy.config import Config, ConfigError
from proxy.state.base import REDIS_SCHEMES, Store


def open_store(cfg: Config) -> Store:
    url = cfg.store_url
    if url and url.startswith(REDIS_SCHEMES):
        if not cfg.secret_key:
            raise ConfigError("STORE_URL is a Redis URL: set PROXY_SECRET_KEY, the same on every replica, "
                              "so that each can open the provider keys another one stored")
        from proxy.state.redis import RedisStore

        try:
            return RedisStore(url, cache_url=cfg.cache_url, outage=cfg.state.outage,
                              heartbeat=cfg.state.heartbeat_seconds)
        except ValueError as exc:
            raise ConfigError(f"STORE_URL: {exc}") from None
    if url and not url.startswith("sqlite://"):
        raise ConfigError("STORE_URL: use sqlite:///path, redis://host:port/db, redis+sentinel://host:26379/master/db "
                          f"or redis+cluster://host:port, not {url.split(':')[0]}://")
    from proxy.state.memory import EmbeddedStore

    path = url[len("sqlite://"):] if url else str(cfg.data_path / "state.db")
    return EmbeddedStore(path or None, cache_url=cfg.cache_url)
