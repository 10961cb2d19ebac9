"""`/v1/llm/api-keys/{id}/budget` (docs/dialects.md, endpoints): read, set, drop; enforced at once, on every replica."""

from __future__ import annotations

import asyncio

import pytest

from proxy.pipeline.auth import digest
from tests.conftest import ADMIN_KEY

ADMIN = {"X-API-Key": ADMIN_KEY}
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["gpt-4o-mini"], "isHosted": True}
COST = (8 * 0.15 + 16 * 0.6) / 1e6


def config(**extra) -> dict:
    return {"providers": [MOCK], **extra,
            "auth": {"adminKey": ADMIN_KEY, "keys": [{"id": "team", "sha256": digest("key-team"), "budgetUsd": 10.0},
                                                     {"id": "free", "sha256": digest("key-free")}]}}


async def ask(gw, key: str) -> int:
    async with gw.post("/v1/chat/completions", headers={"X-API-Key": key},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}) as r:
        await r.read()
        return r.status


async def budget(gw, key_id: str, method: str = "GET", **kw) -> tuple[int, dict]:
    async with gw.session.request(method, f"{gw.url}/v1/llm/api-keys/{key_id}/budget", headers=ADMIN, **kw) as r:
        return r.status, await r.json()


async def test_read_set_and_drop_a_budget(gateway):
    gw = await gateway(config())
    assert await budget(gw, "team") == (200, {"apiKeyId": "team", "budgetLimitUsd": 10.0, "totalSpendUsd": 0.0,
                                              "usagePct": 0.0, "exhausted": False, "source": "config"})
    status, body = await budget(gw, "free", "PUT", json={"budgetLimitUsd": 2.5 * COST})
    assert status == 200 and body["source"] == "api" and body["budgetLimitUsd"] == 2.5 * COST
    assert [await ask(gw, "key-free") for _ in range(4)] == [200, 200, 200, 429]
    status, body = await budget(gw, "free")
    assert body["exhausted"] is True and body["usagePct"] >= 100 and body["totalSpendUsd"] == pytest.approx(3 * COST)
    status, body = await budget(gw, "free", "PUT", json={"budgetLimitUsd": 0})  # 0: no budget
    assert body["exhausted"] is False and await ask(gw, "key-free") == 200
    status, body = await budget(gw, "free", "DELETE")
    assert (body["source"], body["totalSpendUsd"], body["budgetLimitUsd"]) == ("none", 0.0, 0.0)


async def test_a_spend_far_over_a_tiny_budget_is_still_a_json_number(gateway):
    gw = await gateway(config())  # found by R26's fuzzing: 3e10 / 1e-308 is inf, which JSON has no number for
    status, body = await budget(gw, "free", "PUT", json={"budgetLimitUsd": 1.1125369292536007e-308,
                                                          "totalSpendUsd": 29852894751.144726})
    assert status == 200 and body["exhausted"] is True and body["usagePct"] == 1e15


async def test_an_api_budget_replaces_the_config_one_until_dropped(gateway):
    gw = await gateway(config())
    await budget(gw, "team", "PUT", json={"budgetLimitUsd": COST / 2})
    assert [await ask(gw, "key-team") for _ in range(2)] == [200, 429]
    status, body = await budget(gw, "team", "PUT", json={"budgetLimitUsd": 1.0, "totalSpendUsd": 0})
    assert body["totalSpendUsd"] == 0.0 and await ask(gw, "key-team") == 200
    status, body = await budget(gw, "team", "DELETE")
    assert (body["source"], body["budgetLimitUsd"]) == ("config", 10.0)


@pytest.mark.parametrize("body", [b'{"budgetLimitUsd":-1}', b'{"budgetLimitUsd":"5"}', b'{"limit":5}', b"nope", b"{}"])
async def test_bad_bodies_are_400(gateway, body):
    gw = await gateway(config())
    status, answer = await budget(gw, "team", "PUT", data=body)
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"


async def test_admin_key_required(gateway):
    gw = await gateway(config())
    for headers, status in (({}, 401), ({"X-API-Key": "key-team"}, 401)):
        async with gw.get("/v1/llm/api-keys/team/budget", headers=headers) as r:
            assert r.status == status
    async with gw.get("/v1/llm/api-keys/bad%20id/budget", headers=ADMIN) as r:
        assert r.status == 400
    plain = await gateway({"providers": [MOCK]})
    async with plain.get("/v1/llm/api-keys/team/budget", headers=ADMIN) as r:
        assert r.status == 403


async def test_a_budget_set_on_one_replica_is_enforced_by_another_within_a_second(gateway, redis_url):
    one = await gateway(config(storeUrl=redis_url, secretKey="shared"))
    two = await gateway(config(storeUrl=redis_url, secretKey="shared"))
    await budget(one, "free", "PUT", json={"budgetLimitUsd": COST / 2})
    for _ in range(100):
        if "free" in two.gw.quota.budgets:
            break
        await asyncio.sleep(0.01)
    assert [await ask(two, "key-free"), await ask(one, "key-free"), await ask(two, "key-free")] == [200, 429, 429]
    assert (await budget(two, "free"))[1]["exhausted"] is True


async def test_a_store_outage_is_a_503(gateway):
    from proxy.state.base import StateUnavailable

    gw = await gateway(config())

    async def down(*_a):
        raise StateUnavailable("down")

    gw.gw.state.spend = down
    status, body = await budget(gw, "team")
    assert status == 503 and body["error"]["code"] == "state_unavailable"


async def test_budget_changes_leave_audit_lines(gateway):
    from structlog.testing import capture_logs

    gw = await gateway(config())
    with capture_logs() as logs:
        assert (await budget(gw, "team", "PUT", json={"budgetLimitUsd": 5.0}))[0] == 200
        assert (await budget(gw, "team", "DELETE"))[0] == 200
        assert (await budget(gw, "team"))[0] == 200  # a read changes nothing: no line
    audits = [(e["action"], e["api_key_id"], e["admin_key_id"]) for e in logs if e["event"] == "audit"]
    assert audits == [("budget_set", "team", "admin_key"), ("budget_delete", "team", "admin_key")]
    text = gw.gw.metrics.render().decode()
    assert 'aigw_admin_changes_total{action="budget_set"} 1.0' in text
    assert 'aigw_admin_changes_total{action="budget_delete"} 1.0' in text
