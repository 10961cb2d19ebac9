"""The usage record: one per request, exactly once (docs/records.md)."""

from __future__ import annotations

import datetime
import math

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
    endpoint: str = "chat"  # the API the caller spoke: chat | embeddings | responses | messages

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(UsageRecord).decode


_second: tuple[float, str] = (math.nan, "")  # the last whole second stamped, and its text


def stamp(ts: float) -> str:
    """`ts` (Unix seconds) as the record's `time`, RFC 3339 in UTC with milliseconds: the text of
    `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` with a "Z", its date and
    time of day formatted once per second rather than once per record."""
    global _second
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)  # rounded half to even, as datetime does
    if micros >= 1_000_000:
        micros, whole = micros - 1_000_000, whole + 1
    elif micros < 0:
        micros, whole = micros + 1_000_000, whole - 1
    second, text = _second
    if whole != second:
        text = datetime.datetime.fromtimestamp(whole, datetime.UTC).isoformat(timespec="seconds")[:19]
        _second = (whole, text)
    return f"{text}.{micros // 1000:03d}Z"
