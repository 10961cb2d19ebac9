"""One request's bookkeeping: attempts, timings, usage, and its usage record, written once."""

from __future__ import annotations

import itertools
import os
import time

from proxy.providers.base import Usage
from proxy.telemetry.record import UsageRecord, stamp
from proxy.upstream.vault import last4

_PREFIX = os.urandom(8).hex()  # per process: ids stay unique across workers and restarts
_counter = itertools.count(1)


def new_id() -> str:
    return f"{_PREFIX}{next(_counter):012x}"


class Exchange:
    __slots__ = ("gw", "id", "route", "started", "wall", "caller_id", "model_requested", "model_served",
                 "stream", "tags", "provider", "key_last4", "attempts", "failures", "usage",
                 "estimated", "status", "error_type", "ttft", "upstream_started", "upstream_done",
                 "health", "prompt_estimate", "http_status", "savings_baseline", "rule", "charged", "cache_hit",
                 "_done")

    def __init__(self, gw, route: str) -> None:
        self.gw = gw
        self.id = new_id()
        self.route = route
        self.started = time.monotonic()
        self.wall = time.time()
        self.caller_id: str | None = None
        self.model_requested = ""
        self.model_served: str | None = None
        self.stream = False
        self.tags: list[str] = []
        self.provider = None
        self.key_last4: str | None = None
        self.attempts = 0
        self.failures = 0
        self.usage: Usage | None = None
        self.estimated = False
        self.status = "completed"
        self.error_type: str | None = None
        self.ttft: float | None = None
        self.upstream_started: float | None = None
        self.upstream_done: float | None = None
        self.health = None
        self.prompt_estimate = 0
        self.http_status = 200
        # The model whose list price savings are measured against; None: the requested one.
        # Cost routing sets it for `auto`, which has no price: the best-quality candidate.
        self.savings_baseline: str | None = None
        self.rule = None  # the caller's limits (proxy.pipeline.quota), None when it has none
        self.charged = False  # its tokens and cost were counted against them
        self.cache_hit = False
        self._done = False

    # -- attempts -------------------------------------------------------------------------
    def begin_attempt(self, provider) -> None:
        self.release()
        self.attempts += 1
        self.provider = provider
        self.health = health = self.gw.router.state(provider.name)
        health.in_flight += 1
        self.gw.metrics.upstream_in_flight += 1
        if self.upstream_started is None:
            self.upstream_started = time.monotonic()

    def release(self) -> None:
        """The provider is no longer being called for this request."""
        if self.health is not None:
            self.health.in_flight -= 1
            self.health = None
            self.gw.metrics.upstream_in_flight -= 1
            self.upstream_done = time.monotonic()

    def first_byte(self) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started

    def fail(self, error) -> None:
        self.http_status = error.status
        self.error_type = error.code or error.type
        if self.status == "completed":
            # a provider's overload is the provider failing, like a 502, not the gateway refusing
            upstream = error.status in (502, 504) or error.code == "upstream_overloaded"
            self.status = "upstream_error" if upstream else "rejected"
            if error.status == 504:
                self.status = "upstream_timeout"

    # -- the record -----------------------------------------------------------------------
    def finish(self) -> None:
        """Write the usage record and metrics; safe to call more than once."""
        if self._done:
            return
        self._done = True
        self.release()
        gw, now = self.gw, time.monotonic()
        latency = now - self.started
        record = self._record(latency)
        gw.batcher.put(record)
        if self.rule is not None:
            gw.quota.record(self, record)
        gw.metrics.finished(self, record, latency)

    def _tokens(self) -> Usage:
        if self.usage is not None:
            return self.usage
        if self.status in ("rejected",) or self.provider is None:
            return Usage()
        self.estimated = True
        return Usage(prompt_tokens=self.prompt_estimate, total_tokens=self.prompt_estimate)

    def _record(self, latency: float) -> UsageRecord:
        usage = self._tokens()
        provider = self.provider
        gw = self.gw
        served = self.model_served
        cost = gw.prices.cost(served, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                              provider.name if provider else None)
        baseline = self.savings_baseline or self.model_requested
        savings = 0.0
        if not gw.prices.same_model(served, baseline):  # served as asked: nothing saved, no second price
            listed = gw.prices.cost(baseline, usage.prompt_tokens, usage.completion_tokens)
            savings = max(listed - (cost or 0.0), 0.0) if listed is not None else 0.0
        if self.cache_hit:  # nothing was paid: what the answer cost when it was made is saved
            savings, cost = cost or 0.0, 0.0
        upstream = 0.0
        if self.upstream_started is not None:
            upstream = (self.upstream_done or time.monotonic()) - self.upstream_started
        return UsageRecord(
            id=self.id, time=stamp(self.wall),
            cluster_id=gw.cfg.castai.cluster_id, api_key_id=self.caller_id,
            provider=provider.name if provider else None,
            provider_type=provider.item.supported_provider if provider else None,
            provider_key_last4=self.key_last4, model_requested=self.model_requested,
            model_served=served, stream=self.stream, status=self.status, error_type=self.error_type,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens,
            total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
            tokens_estimated=self.estimated or usage.estimated, latency_ms=round(latency * 1000, 3),
            ttft_ms=None if self.ttft is None else round(self.ttft * 1000, 3),
            proxy_overhead_ms=round(max(latency - upstream, 0.0) * 1000, 3),
            cost_usd=cost or 0.0, savings_usd=savings, attempts=self.attempts,
            recovered=self.failures > 0 and self.status == "completed", cache_hit=self.cache_hit,
            tags=self.tags, ts=self.wall, endpoint=self.route)

    def spent(self) -> tuple[int, float]:
        """The tokens and USD this request costs its caller's limits (a cache hit is free)."""
        if self.cache_hit:
            return 0, 0.0
        usage = self._tokens()
        cost = self.gw.prices.cost(self.model_served, usage.prompt_tokens, usage.completion_tokens,
                                   usage.cached_tokens, self.provider.name if self.provider else None)
        return usage.total_tokens or usage.prompt_tokens + usage.completion_tokens, cost or 0.0

    def provider_key(self, key: str | None) -> None:
        self.key_last4 = last4(key) if key else None


