"""The usage record of one request: every field of docs/records.md, written exactly once."""

from __future__ import annotations

import msgspec

from proxy.telemetry.record import UsageRecord
from tests.conftest import PROVIDER_KEY, openai_provider

FIELDS = ("id time clusterId apiKeyId provider providerType providerKeyLast4 modelRequested modelServed stream "
          "status errorType promptTokens completionTokens cachedTokens reasoningTokens totalTokens tokensEstimated "
          "latencyMs ttftMs proxyOverheadMs costUsd savingsUsd attempts recovered cacheHit tags").split()


async def test_record_fields_cost_and_no_secrets(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("gpt-4o-mini",))],
                        "castai": {"clusterId": "cluster-1"}})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "tags": ["team:a"]}
    async with gw.post("/v1/chat/completions", json=body, headers={"X-API-Key": "caller-secret-key-9999"}) as r:
        assert r.status == 200
        request_id = r.headers["X-Request-Id"]
    (record,) = await gw.records()
    shipped = msgspec.to_builtins(record)
    assert set(FIELDS) <= set(shipped)
    assert record.id == request_id and record.time.endswith("Z") and record.cluster_id == "cluster-1"
    assert (record.provider, record.provider_type, record.model_served) == ("fake", "OPENAI_COMPATIBLE", "gpt-4o-mini")
    # gpt-4o-mini: 0.15 per 1M input (0.075 cached), 0.6 per 1M output; 12 prompt (2 cached), 10 completion
    assert abs(record.cost_usd - (10 * 0.15 + 2 * 0.075 + 10 * 0.6) / 1e6) < 1e-12
    assert record.latency_ms >= record.ttft_ms >= 0 and record.proxy_overhead_ms >= 0
    text = msgspec.json.encode(record).decode()
    assert "caller-secret-key" not in text and PROVIDER_KEY[:12] not in text


async def test_rejected_requests_have_a_record_too(gateway):
    gw = await gateway()
    async with gw.post("/v1/chat/completions", json={"model": "unknown", "messages": [{"role": "user"}]}) as r:
        assert r.status == 404
    (record,) = await gw.records()
    assert (record.status, record.error_type, record.attempts, record.provider) == ("rejected", "model_not_found", 0, None)
    assert isinstance(record, UsageRecord) and record.total_tokens == 0
