"""`GET …/models` in OpenAI's list shape, filtered by what the caller may use."""

from __future__ import annotations

import pytest

from proxy.pipeline.auth import digest
from tests.conftest import openai_provider


@pytest.mark.parametrize("path", ["/openai/v1/models", "/openai/models", "/v1/models", "/models"])
async def test_models_list(gateway, fake_openai, path):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("b-model", "a-model"))]})
    async with gw.get(path) as r:
        body = await r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a-model", "b-model"]
    assert set(body["data"][0]) == {"id", "object", "created", "owned_by"}


async def test_models_are_filtered_by_the_callers_allowance_and_need_a_key(gateway, fake_openai):
    keys = [{"id": "narrow", "sha256": digest("narrow-key-1234"), "models": ["a-model"]}]
    gw = await gateway({"auth": {"keys": keys},
                        "providers": [openai_provider(fake_openai, models=("a-model", "b-model"))]})
    async with gw.get("/v1/models") as r:
        assert r.status == 401
    async with gw.get("/v1/models", headers={"X-API-Key": "narrow-key-1234"}) as r:
        assert [m["id"] for m in (await r.json())["data"]] == ["a-model"]
    body = {"model": "b-model", "messages": [{"role": "user", "content": "x"}]}
    async with gw.post("/v1/chat/completions", json=body, headers={"X-API-Key": "narrow-key-1234"}) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "model_not_allowed"
