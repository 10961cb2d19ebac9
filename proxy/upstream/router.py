"""Choosing providers for a model (docs/providers.md, routing): candidates, order, circuit state.

Order: hosted before not hosted; within a tier, the lowest in-flight per unit of weight (random
among equals); providers whose circuit is open go last, never dropped, so an outage of every
provider still tries them.
"""

from __future__ import annotations

import random
import time

from proxy.config import Routing
from proxy.errors import ModelNotFound, PermissionDenied
from proxy.upstream.registry import Provider, Registry


class Health:
    """Per-provider in-flight count and circuit breaker."""

    __slots__ = ("in_flight", "failures", "open_until", "ejections")

    def __init__(self) -> None:
        self.in_flight = 0
        self.failures = 0
        self.open_until = 0.0
        self.ejections = 0


class Route:
    __slots__ = ("provider", "model")

    def __init__(self, provider: Provider, model: str) -> None:
        self.provider = provider
        self.model = model


class Router:
    def __init__(self, registry: Registry, cfg: Routing, clock=time.monotonic) -> None:
        self.registry = registry
        self.cfg = cfg
        self.clock = clock
        self.health: dict[str, Health] = {}
        self.on_open = None  # (name, seconds) -> None: shared state tells the other replicas

    def state(self, name: str) -> Health:
        found = self.health.get(name)
        if found is None:
            found = self.health[name] = Health()
        return found

    def is_open(self, name: str) -> bool:
        found = self.health.get(name)
        return found is not None and found.open_until > self.clock()

    def routes(self, model: str, allowed: frozenset[str] | None = None, kind: str = "chat") -> list[Route]:
        """Every provider that may serve `model`, best first; 404 when there is none.

        For embeddings, providers whose adapter cannot serve them are left out, unless that is all
        of them: then the first one's adapter answers the 400 that says so."""
        served = model
        candidates = self.registry.by_model.get(model)
        if candidates is None and "/" in model:
            name, _, bare = model.partition("/")
            pinned = self.registry.by_name.get(name)
            if pinned is not None and bare in pinned.item.models:
                candidates, served = (pinned,), bare
        if not candidates:
            raise ModelNotFound(f"The model '{model}' does not exist or no provider serves it",
                                param="model")
        if allowed is not None and served not in allowed and model not in allowed:
            raise PermissionDenied(f"this API key may not use the model '{model}'", param="model",
                                   code="model_not_allowed")
        if kind == "embeddings":
            candidates = tuple(p for p in candidates if p.adapter.caps.embeddings) or candidates
        if len(candidates) == 1:
            return [Route(candidates[0], served)]
        now = self.clock()
        ranked = sorted(candidates, key=lambda p: self._rank(p, now))
        return [Route(p, served) for p in ranked]

    def _rank(self, provider: Provider, now: float) -> tuple:
        health = self.health.get(provider.name)
        in_flight, closed = (0, True) if health is None else (health.in_flight, health.open_until <= now)
        return (not closed, not provider.hosted, in_flight / provider.weight, random.random())

    def open_for(self, name: str, seconds: float) -> None:
        """Open a circuit another replica opened (it stays open at least as long as it was)."""
        health = self.state(name)
        health.open_until = max(health.open_until, self.clock() + seconds)

    def succeeded(self, name: str) -> None:
        health = self.health.get(name)
        if health is not None and (health.failures or health.ejections):
            health.failures = 0
            health.ejections = 0

    def failed(self, name: str, retry_after: float | None = None) -> None:
        """Count a failure; open the circuit after a run of them, or for a 429's Retry-After."""
        health = self.state(name)
        health.failures += 1
        now = self.clock()
        before = health.open_until
        if retry_after is not None:
            health.open_until = max(health.open_until, now + retry_after)
        elif health.failures >= self.cfg.failure_threshold:
            health.ejections += 1
            backoff = self.cfg.ejection_seconds * min(health.ejections, 10)
            health.open_until = now + backoff
            health.failures = 0
        if self.on_open is not None and health.open_until > before:
            self.on_open(name, health.open_until - now)
