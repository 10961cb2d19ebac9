"""GET /v1/llm/usage: the admin key, the parameters, and figures from real requests."""

from __future__ import annotations

from tests.conftest import ADMIN_KEY

MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "mock-gpt-500"], "isHosted": True}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _served(gateway):
    gw = await gateway({"providers": [MOCK], "auth": {"adminKey": ADMIN_KEY}})
    for n in range(9):
        model = "mock-gpt-500" if n % 3 == 0 else "mock-gpt"
        body = {"model": model, "messages": [{"role": "user", "content": "x" * (n * 40 + 1)}],
                "tags": [f"team:{'ab'[n % 2]}"]}
        async with gw.post("/v1/chat/completions", json=body, headers={"X-Tags": "env:test"}) as r:
            await r.read()
    return gw, await gw.records()


async def test_the_report_needs_the_admin_key(gateway):
    gw = await gateway()
    async with gw.get("/v1/llm/usage") as r:
        assert r.status == 403  # no admin key configured: the control plane is off
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.get("/v1/llm/usage", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"


async def test_figures_from_real_requests(gateway):
    gw, records = await _served(gateway)
    async with gw.get("/v1/llm/usage", params={"groupBy": "tag", "from": "1h"}, headers=ADMIN) as r:
        assert r.status == 200 and r.content_type == "application/json"
        doc = await r.json()
    assert set(doc) == {"from", "to", "groupBy", "groups", "totals"} and doc["groupBy"] == "tag"
    groups = {g["key"]: g for g in doc["groups"]}
    assert set(groups) == {"team:a", "team:b", "env:test"}
    team_a = [r for r in records if "team:a" in r.tags]
    assert groups["team:a"]["requests"] == len(team_a) == 5
    assert groups["team:a"]["inputTokens"] == sum(r.prompt_tokens for r in team_a)
    assert groups["team:a"]["errors"] == sum(r.status != "completed" for r in team_a)
    assert groups["env:test"]["requests"] == doc["totals"]["requests"] == 9
    assert doc["totals"]["errors"] == 3 and doc["totals"]["outputTokens"] == sum(r.completion_tokens for r in records)
    assert set(groups["team:a"]) == {"key", "requests", "errors", "inputTokens", "outputTokens", "costUsd",
                                     "savingsUsd", "avgLatencyMs", "avgTtftMs"}


async def test_filter_and_group_by_model(gateway):
    gw, records = await _served(gateway)
    async with gw.get("/v1/llm/usage", params={"groupBy": "model", "filter": "tag=team:b"}, headers=ADMIN) as r:
        doc = await r.json()
    team_b = [r for r in records if "team:b" in r.tags]
    assert sum(g["requests"] for g in doc["groups"]) == doc["totals"]["requests"] == len(team_b) == 4


async def test_a_bad_parameter_is_a_400(gateway):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.get("/v1/llm/usage", params={"groupBy": "colour"}, headers=ADMIN) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "groupBy"
