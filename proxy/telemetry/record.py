"""The usage record: one per request, exactly once (DESIGN §7 and §11)."""

from __future__ import annotations

import msgspec


class UsageRecord(msgspec.Struct, rename="camel", omit_defaults=False):
    id: str
    time: str  # RFC 3339, UTC, milliseconds
    cluster_id: str | None
    api_key_id: str | None
    provider: str | None
    provider_type: str | None
    provider_key_last4: str | None
    model_requested: str
    model_served: str | None
    stream: bool
    status: str  # completed | client_aborted | upstream_truncated | upstream_timeout | upstream_error | rejected
    error_type: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    tokens_estimated: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    proxy_overhead_ms: float = 0.0
    cost_usd: float = 0.0
    savings_usd: float = 0.0
    attempts: int = 0
    recovered: bool = False
    cache_hit: bool = False
    tags: list[str] = []
    ts: float = 0.0  # Unix seconds of `time`, for stores and windows

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(UsageRecord).decode
