"""Redis clients from STORE_URL / CACHE_URL: one server, Sentinel, or Cluster (redis-py's own).

    redis://[user:pass@]host:port/db            one server (rediss:// with TLS)
    redis+sentinel://[user:pass@]h1:26379,h2:26379/mymaster/db
                                                the primary the sentinels name, followed through
                                                failovers (rediss+sentinel:// with TLS)
    redis+cluster://[user:pass@]h1:6379[,h2:6379]
                                                a Redis Cluster: any of its nodes to start from
                                                (rediss+cluster:// with TLS)

Every URL takes `?prefix=` (the key prefix, default ``aiep:``); the other query parameters
are redis-py's (`ssl_cert_reqs=none`, `ssl_ca_certs=…`). With Sentinel the credentials
are given to the sentinels too (as Bitnami's chart sets them up); `sentinel_password=` (empty:
none) sets theirs apart.

Clients never retry a failed command themselves: a retry after a lost reply could count a
request twice, and a store that is down is handled once, above them (proxy.state.outage).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from aiocache.backends.redis import RedisCache
from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

DEFAULT_PREFIX = "aiep:"
TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 5}


class Target(NamedTuple):
    kind: str  # "server" | "sentinel" | "cluster"
    hosts: tuple[tuple[str, int], ...]
    service: str | None  # the Sentinel master's name
    options: dict  # redis-py connection keyword arguments (db, credentials, TLS, …)
    prefix: str


def split_url(url: str) -> tuple[str, str]:
    """(the URL without its `prefix` parameter, the key prefix)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True))), prefix


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """`h1:26379,[::1]:26380,h3` → ((host, port), …)."""
    found = []
    for part in netloc.rpartition("@")[2].split(","):
        part = part.strip()
        if part.startswith("["):  # an IPv6 literal, with or without a port
            host, _, port = part[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = part.partition(":")
        if not host:
            raise ValueError("a host is missing")
        found.append((host, int(port) if port else default_port))
    return tuple(found)


def parse(url: str) -> Target:
    """What a store URL names; ValueError with the reason when it is not usable."""
    plain, prefix = split_url(url)
    if "{" in prefix or "}" in prefix:
        raise ValueError("the prefix must not contain '{' or '}': they would decide which cluster slot a key is in")
    scheme, _, rest = plain.partition("://")
    family = scheme.split("+")[1] if "+" in scheme else "server"
    tls = scheme.startswith("rediss")
    parts = urlsplit(plain)
    userinfo = parts.netloc.rpartition("@")[0]
    path = [unquote(p) for p in parts.path.split("/") if p]
    service = None
    if family == "sentinel":
        if not path:
            raise ValueError("a Sentinel URL names its master: redis+sentinel://host:26379/mymaster/0")
        service, path = path[0], path[1:]
    elif family == "cluster" and path and path != ["0"]:
        raise ValueError("a Redis Cluster has only database 0")
    single = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}localhost/{path[0] if path else 0}"
    options = parse_url(single + (f"?{parts.query}" if parts.query else ""))
    options.pop("host", None)
    options.pop("connection_class", None)  # each client picks its own class; TLS is asked with ssl
    if tls:
        options["ssl"] = True
    if family == "server":
        return Target(family, ((parts.hostname or "127.0.0.1", parts.port or 6379),), None, options, prefix)
    blank = parse_qs(parts.query, keep_blank_values=True).get("sentinel_password")
    if blank is not None:  # parse_url drops an empty value, which here means "none"
        options["sentinel_password"] = blank[0]
    if family == "cluster":
        options.pop("db", None)
    default = 26379 if family == "sentinel" else 6379
    return Target(family, _hosts(parts.netloc, default), service, options, prefix)


def connect(target: Target, **extra):
    """A redis-py asyncio client for `target` (not connected until first used)."""
    options = {**TIMEOUTS, "retry": Retry(NoBackoff(), 0), "decode_responses": False, **target.options, **extra}
    if target.kind == "server":
        host, port = target.hosts[0]
        return aioredis.Redis(host=host, port=port, **options)
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return RedisCluster(startup_nodes=nodes, **options)
    sentinel_password = options.pop("sentinel_password", None)
    guard = {k: options[k] for k in ("username", "password", "ssl", "ssl_cert_reqs", "ssl_ca_certs")
             if k in options}
    if sentinel_password is not None:  # the sentinels' own password, or none when empty
        guard.pop("username", None)
        guard["password"] = sentinel_password or None
    sentinels = Sentinel(list(target.hosts), sentinel_kwargs={**TIMEOUTS, **guard})
    return sentinels.master_for(target.service, **options)


def cache_backend(url: str, namespace: str, serializer) -> RedisCache:
    """An aiocache Redis cache for `url` (its prefix goes before the namespace)."""
    target = parse(url)
    cache = RedisCache(serializer=serializer, namespace=f"{target.prefix}cache:{namespace}")
    # aiocache builds a single-server client from host and port; this one follows Sentinel and
    # Cluster too (the unused pool it made holds no connection)
    cache.client = connect(target)
    return cache
