"""What one request came to, as one immutable value, and the usage record made from it.

The pipeline builds an `Outcome` once, when the request has ended (answered, refused, failed,
aborted by its client, or answered from the cache); `to_record` turns it into the request's
usage record with no side effect, so the record of every path is made the same way.
"""

from __future__ import annotations

import itertools
import os

import msgspec

from proxy.catalog.prices import Prices
from proxy.providers.base import Usage
from proxy.telemetry.record import UsageRecord, stamp
from proxy.upstream.registry import Provider

_PREFIX = os.urandom(8).hex()  # per process: ids stay unique across workers and restarts
_counter = itertools.count(1)
_NOTHING = Usage()


def new_id() -> str:
    return f"{_PREFIX}{next(_counter):012x}"


class Outcome(msgspec.Struct, frozen=True, gc=False):
    id: str
    endpoint: str  # chat, embeddings, or the inbound dialect's name
    started: float  # monotonic
    wall: float  # epoch seconds
    status: str  # completed, rejected, upstream_error, upstream_timeout, upstream_truncated, client_aborted
    http_status: int
    error_type: str | None = None
    caller_id: str | None = None
    model_requested: str = ""
    model_served: str | None = None
    stream: bool = False
    tags: list[str] = []
    prompt_estimate: int = 0  # from the body's size: the tokens of a request the provider never counted
    # The model whose list price savings are measured against; None: the requested one. Cost
    # routing sets it for `auto`, which has no price: the best-quality candidate.
    savings_baseline: str | None = None
    provider: Provider | None = None  # the provider called last
    key_last4: str | None = None
    attempts: int = 0
    failures: int = 0
    upstream_seconds: float = 0.0
    usage: Usage | None = None  # None: the provider never said
    estimated: bool = False  # usage counted by the gateway (an aborted stream), not the provider
    ttft: float | None = None  # seconds from the request's start to the first byte sent
    cache_hit: bool = False


def tokens(outcome: Outcome) -> tuple[Usage, bool]:
    """The request's tokens and whether they are estimated: the provider's count when it gave
    one; none for a request no provider saw; else the prompt's estimate."""
    if outcome.usage is not None:
        return outcome.usage, outcome.estimated
    if outcome.status == "rejected" or outcome.provider is None:
        return _NOTHING, outcome.estimated
    estimate = outcome.prompt_estimate
    return Usage(prompt_tokens=estimate, total_tokens=estimate), True


def spent(outcome: Outcome, prices: Prices) -> tuple[int, float]:
    """The tokens and USD this request costs its caller's limits (a cache hit is free)."""
    if outcome.cache_hit:
        return 0, 0.0
    usage, _ = tokens(outcome)
    provider = outcome.provider
    cost = prices.cost(outcome.model_served, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                       provider.name if provider else None)
    return usage.total_tokens or usage.prompt_tokens + usage.completion_tokens, cost or 0.0


def to_record(outcome: Outcome, prices: Prices, cluster_id: str | None, latency: float) -> UsageRecord:
    """The usage record of a request that ended `latency` seconds after it started."""
    usage, estimated = tokens(outcome)
    provider = outcome.provider
    served = outcome.model_served
    cost = prices.cost(served, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                       provider.name if provider else None)
    baseline = outcome.savings_baseline or outcome.model_requested
    savings = 0.0
    if not prices.same_model(served, baseline):  # served as asked: nothing saved, no second price
        listed = prices.cost(baseline, usage.prompt_tokens, usage.completion_tokens)
        savings = max(listed - (cost or 0.0), 0.0) if listed is not None else 0.0
    if outcome.cache_hit:  # nothing was paid: what the answer cost when it was made is saved
        savings, cost = cost or 0.0, 0.0
    ttft = outcome.ttft
    return UsageRecord(
        id=outcome.id, time=stamp(outcome.wall),
        cluster_id=cluster_id, api_key_id=outcome.caller_id,
        provider=provider.name if provider else None,
        provider_type=provider.item.supported_provider if provider else None,
        provider_key_last4=outcome.key_last4, model_requested=outcome.model_requested,
        model_served=served, stream=outcome.stream, status=outcome.status, error_type=outcome.error_type,
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        tokens_estimated=estimated or usage.estimated, latency_ms=round(latency * 1000, 3),
        ttft_ms=None if ttft is None else round(ttft * 1000, 3),
        proxy_overhead_ms=round(max(latency - outcome.upstream_seconds, 0.0) * 1000, 3),
        cost_usd=cost or 0.0, savings_usd=savings, attempts=outcome.attempts,
        recovered=outcome.failures > 0 and outcome.status == "completed", cache_hit=outcome.cache_hit,
        tags=outcome.tags, ts=outcome.wall, endpoint=outcome.endpoint)
