"""Helpers for the telemetry tests: records, and sinks that record, fail or hang on demand."""

from __future__ import annotations

import asyncio
import time

from proxy.telemetry.lane import Retryable
from proxy.telemetry.record import UsageRecord


def record(n: int = 0, **fields) -> UsageRecord:
    values = dict(id=f"rec-{n:08d}", time="2025-01-01T00:00:00.000Z", cluster_id="c-1", api_key_id="team-a",
                  provider="fake", provider_type="OPENAI_COMPATIBLE", provider_key_last4="…1234",
                  model_requested="gpt-4o-mini", model_served="gpt-4o-mini", stream=False, status="completed",
                  error_type=None, prompt_tokens=12, completion_tokens=10, total_tokens=22, latency_ms=12.5,
                  ttft_ms=3.25, cost_usd=0.0001, tags=["team:a"], ts=time.time())
    values.update(fields)
    return UsageRecord(**values)


class Recorder:
    """A sink that keeps what it is sent; `fail` raises Retryable that many times; `hang` blocks."""

    def __init__(self, name: str = "rec", *, fail: int = 0, retry_after: float | None = None) -> None:
        self.name = name
        self.fail = fail
        self.retry_after = retry_after
        self.hang = False
        self.ids: list[str] = []
        self.batches: list[int] = []
        self.attempts: list[float] = []

    async def send(self, records: list[UsageRecord]) -> None:
        self.attempts.append(time.monotonic())
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            self.fail -= 1
            raise Retryable("test", self.retry_after)
        self.ids.extend(r.id for r in records)
        self.batches.append(len(records))


async def until(predicate, timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll until `predicate()` holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(step)
