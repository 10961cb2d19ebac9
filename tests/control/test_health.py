"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from tests.conftest import PROVIDER_KEY, openai_provider


async def test_healthz_and_readyz(gateway):
    gw = await gateway()
    async with gw.get("/healthz") as r:
        assert r.status == 200
    async with gw.get("/readyz") as r:
        assert r.status == 200
    gw.gw.draining = True
    async with gw.get("/readyz") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["status"] == "draining"
    async with gw.get("/healthz") as r:
        assert r.status == 200


async def test_metrics_count_requests_latency_tokens_and_errors(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        async with gw.post("/v1/chat/completions", json=body) as r:
            assert r.status == 200
    async with gw.post("/v1/chat/completions", json={**body, "model": "nope"}) as r:
        assert r.status == 404
    async with gw.post("/v1/chat/completions", json={**body, "stream": True}) as r:
        await r.read()
    async with gw.get("/metrics") as r:
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    ok = 'endpoint="chat",model="gpt-4o-mini",provider="fake"'
    assert f'aigw_requests_total{{{ok},status="200"}} 4.0' in text
    # an unknown model is not a label value of its own: it is `other`, with no provider
    assert 'aigw_requests_total{endpoint="chat",model="other",provider="none",status="404"} 1.0' in text
    assert f'aigw_request_duration_seconds_count{{{ok}}} 4.0' in text
    assert f'aigw_time_to_first_token_seconds_count{{{ok}}} 1.0' in text  # streams only
    assert f'aigw_output_tokens_total{{{ok},status="200"}} 40.0' in text
    assert "aigw_requests_in_flight 0.0" in text and "aigw_upstream_in_flight 0.0" in text
    assert PROVIDER_KEY[:12] not in text
