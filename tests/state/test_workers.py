"""`serve --workers 2` on the embedded store: a change made through one worker serves on both
within a second (the promise the Redis store keeps across replicas), through real processes."""

from __future__ import annotations

import asyncio

from tests.conftest import openai_provider
from tests.workers import ADMIN, both_serving, fresh, start_workers, stop_workers


async def test_a_registration_a_deletion_and_a_budget_reach_every_worker_within_a_second(tmp_path, fake_openai):
    gw = await start_workers(tmp_path / "gw")
    try:
        await both_serving(gw)
        provider = openai_provider(fake_openai, name="reg", models=("reg-model",))
        status, _, _ = await fresh(gw.url + "/v1/llm/providers", json={"providers": [provider]}, headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        body = {"model": "reg-model", "messages": [{"role": "user", "content": "hi"}]}
        answers = [await fresh(gw.url + "/v1/chat/completions", json=body) for _ in range(20)]
        assert [status for status, _, _ in answers] == [200] * 20
        assert len({worker for _, _, worker in answers}) == 2  # both workers served it

        status, _, _ = await fresh(gw.url + "/v1/llm/providers/reg", method="DELETE", headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        answers = [await fresh(gw.url + "/v1/chat/completions", json=body) for _ in range(20)]
        assert [(status, out["error"]["code"]) for status, out, _ in answers] == [(404, "model_not_found")] * 20
        assert len({worker for _, _, worker in answers}) == 2

        budget = gw.url + "/v1/llm/api-keys/team-a/budget"
        status, _, _ = await fresh(budget, method="PUT", json={"budgetLimitUsd": 7.5}, headers=ADMIN)
        assert status == 200
        await asyncio.sleep(1.0)
        seen = [await fresh(budget, method="GET", headers=ADMIN) for _ in range(20)]
        assert [(out["budgetLimitUsd"], out["source"]) for _, out, _ in seen] == [(7.5, "api")] * 20
    finally:
        assert await stop_workers(gw) == 0
