"""MOCK: scenarios chosen by model name, through the gateway."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes.openai import Behaviour  # noqa: F401  (the same wire as the OpenAI fake)

ITEM = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "mock-gpt-slow", "mock-gpt-long",
        "mock-429", "mock-500", "mock-truncated", "mock-errorstream"], "isHosted": True}
MESSAGES = [{"role": "user", "content": "hello"}]


async def _post(gw, model, stream=False):
    async with gw.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": stream}) as r:
        return r.status, dict(r.headers), await r.read()


async def test_normal_json_and_stream(gateway):
    gw = await gateway({"providers": [ITEM]})
    status, _, body = await _post(gw, "mock-gpt")
    answer = orjson.loads(body)
    assert status == 200 and answer["usage"]["completion_tokens"] == 16
    status, _, raw = await _post(gw, "mock-gpt", stream=True)
    assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"data: ") == 16 + 3
    records = await gw.records()
    assert [r.completion_tokens for r in records] == [16, 16] and not records[1].tokens_estimated


async def test_long_and_slow(gateway):
    gw = await gateway({"providers": [ITEM]})
    _, _, raw = await _post(gw, "mock-gpt-long", stream=True)
    assert raw.count(b"data: ") == 1000 + 3


@pytest.mark.parametrize(("model", "status", "code"), [("mock-429", 429, "upstream_rate_limited"),
                                                      ("mock-500", 502, "upstream_error"),
                                                      ("mock-errorstream", 502, "upstream_error")])
async def test_failures(gateway, model, status, code):
    gw = await gateway({"providers": [ITEM]})
    got, headers, body = await _post(gw, model, stream=model == "mock-errorstream")
    assert got == status and orjson.loads(body)["error"]["code"] == code
    if status == 429:
        assert headers["Retry-After"] == "1"


async def test_truncated(gateway):
    gw = await gateway({"providers": [ITEM]})
    _, _, raw = await _post(gw, "mock-truncated", stream=True)
    assert b"[DONE]" not in raw and b"upstream_truncated" in raw
    status, _, _ = await _post(gw, "mock-truncated")
    assert status == 502
