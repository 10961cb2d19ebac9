"""Per-key limits through the gateway (docs/configuration.md): RPM, TPM and budget, their 429s, the
fast path of keys without limits, and limits shared by two gateways on one Redis."""

from __future__ import annotations

import asyncio

import pytest

from proxy.pipeline.auth import digest
from proxy.state.base import StateUnavailable

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "gpt-4o-mini"], "isHosted": True}
MESSAGES = [{"role": "user", "content": "hi"}]
COST = (8 * 0.15 + 16 * 0.6) / 1e6  # one mock answer on gpt-4o-mini: 8 prompt and 16 completion tokens


def keyed(**limits) -> dict:
    return {"providers": [MOCK], "auth": {"keys": [{"id": "team", "sha256": digest("key-team"), **limits},
                                                   {"id": "free", "sha256": digest("key-free")}]}}


async def ask(gw, key: str = "key-team", **body):
    async with gw.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o-mini", "messages": MESSAGES, **body}) as r:
        return r.status, r.headers, await r.read()


async def test_rpm_refuses_with_an_openai_shaped_429(gateway):
    gw = await gateway(keyed(rpm=2))
    assert [(await ask(gw))[0] for _ in range(2)] == [200, 200]
    status, headers, body = await ask(gw)
    assert status == 429 and headers["Retry-After"].isdigit() and 1 <= int(headers["Retry-After"]) <= 60
    error = __import__("orjson").loads(body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert "requests per minute" in error["message"] and "limit 2" in error["message"]
    assert (await ask(gw, "key-free"))[0] == 200  # another key is not limited
    records = await gw.records()
    assert [r.status for r in records if r.api_key_id == "team"].count("rejected") == 1


async def test_tpm_counts_finished_requests_streamed_or_not(gateway):
    gw = await gateway(keyed(tpm=40))
    assert (await ask(gw))[0] == 200  # 24 tokens
    assert (await ask(gw, stream=True))[0] == 200  # 48 in the minute now
    status, headers, body = await ask(gw)
    assert status == 429 and b"tokens per minute" in body and b"used 48" in body
    assert int(headers["Retry-After"]) >= 1


async def test_budget_stops_spend_within_one_request(gateway):
    budget = 2.5 * COST
    gw = await gateway(keyed(budgetUsd=budget))
    statuses = [(await ask(gw))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    status, headers, body = await ask(gw)
    error = __import__("orjson").loads(body)["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "budget" in error["message"] and headers["Retry-After"].isdigit()
    spent = await gw.gw.state.spend("team")
    assert budget <= spent < budget + COST
    records = await gw.records()
    assert sum(r.cost_usd for r in records if r.status == "completed") == pytest.approx(spent)


async def test_keys_without_limits_never_reach_the_store(gateway):
    gw = await gateway(keyed(rpm=10))

    async def refuse(*_a, **_k):
        raise AssertionError("the store was asked about a key without limits")

    gw.gw.state.admit = refuse
    gw.gw.state.charge = refuse
    assert gw.gw.quota.rule(gw.gw.auth.caller({"X-API-Key": "key-free"})) is None
    for _ in range(3):
        assert (await ask(gw, "key-free"))[0] == 200


async def test_a_store_outage_is_a_503_for_limited_keys_only(gateway):
    gw = await gateway(keyed(rpm=10))

    async def down(*_a, **_k):
        raise StateUnavailable("down")

    gw.gw.state.admit = down
    status, headers, body = await ask(gw)
    assert status == 503 and headers["Retry-After"] == "1" and b"state_unavailable" in body
    assert (await ask(gw, "key-free"))[0] == 200


async def test_two_gateways_on_one_redis_share_the_limits(gateway, redis_url):
    config = {**keyed(rpm=5, budgetUsd=100.0), "storeUrl": redis_url, "secretKey": "shared"}
    one, two = await gateway(config), await gateway(config)
    results = await asyncio.gather(*(ask((one, two)[i % 2]) for i in range(12)))
    assert sorted(status for status, _, _ in results) == [200] * 5 + [429] * 7
    assert await one.gw.state.spend("team") == pytest.approx(5 * COST)
