"""The chat route through real loopback HTTP: relay, usage, tags, errors, records."""

from __future__ import annotations

import pytest

from tests.conftest import openai_provider

MESSAGES = [{"role": "user", "content": "Say hello"}]


async def test_non_stream_bytes_pass_through_and_record(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post("/openai/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["choices"][0]["message"]["content"] == "Hello there, how can I help you today?"
    (record,) = await gw.records()
    assert record.status == "completed"
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens, record.reasoning_tokens) == (12, 10, 2, 3)
    assert record.provider == "fake" and record.provider_key_last4 == "…fake"
    assert record.tokens_estimated is False and record.attempts == 1


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/openai/chat/completions",
                                  "/v1/chat/completions", "/chat/completions"])
async def test_aliases(gateway, fake_openai, path):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post(path, json={"model": "gpt-4o-mini", "messages": MESSAGES}) as r:
        assert r.status == 200


async def test_stream_strips_usage_chunk_the_caller_did_not_ask_for(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
        text = await r.read()
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in text.replace(b'"usage":null', b"")
    assert text.endswith(b"data: [DONE]\n\n")
    (record,) = await gw.records()
    assert (record.prompt_tokens, record.completion_tokens) == (12, 10)
