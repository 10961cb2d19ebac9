"""The response cache through the gateway: opt-in, normalisation, scope, stream replay, records."""

from __future__ import annotations

import orjson
import pytest

from proxy.pipeline.auth import digest
from tests.conftest import count_writes_to_clients, openai_provider
from tests.fakes.openai import Behaviour

MESSAGES = [{"role": "user", "content": "Say hello"}]
USE = {"X-Cache": "use"}


def config(fake, **extra) -> dict:
    return {"providers": [openai_provider(fake)], "cache": {"enabled": True, "ttl": 60}, **extra}


async def post(gw, body, headers=None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    async with gw.post("/v1/chat/completions", data=raw,
                       headers={"Content-Type": "application/json", **(headers or {})}) as r:
        return r.status, r.headers, await r.read()


def sse_events(raw: bytes) -> list:
    return [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]


async def test_off_unless_configured_and_our_field_is_never_forwarded(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    for _ in range(2):
        status, headers, _ = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "cache": True}, USE)
        assert status == 200 and "X-Cache" not in headers
    assert len(fake_openai.requests) == 2 and "cache" not in fake_openai.requests[0].body


async def test_a_hit_is_the_same_answer_recorded_as_saved(gateway, fake_openai):
    gw = await gateway(config(fake_openai))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5}
    status, headers, first = await post(gw, body, USE)
    assert status == 200 and headers["X-Cache"] == "miss"
    await gw.records()  # the entry is written in the background
    status, headers, second = await post(gw, body, USE)
    assert status == 200 and headers["X-Cache"] == "hit" and second == first
    assert len(fake_openai.requests) == 1
    miss, hit = await gw.records()
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert miss.cost_usd > 0 and hit.cost_usd == 0 and hit.savings_usd == pytest.approx(miss.cost_usd)
    assert hit.provider is None and hit.attempts == 0 and hit.total_tokens == miss.total_tokens


async def test_the_key_ignores_what_does_not_change_the_answer(gateway, fake_openai):
    gw = await gateway(config(fake_openai))
    await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5}, USE)
    await gw.records()
    same = [b'{"temperature":0.50, "messages":[{"content":"Say hello","role":"user"}],"model":"gpt-4o-mini"}',
            orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5, "user": "u-1",
                          "tags": ["team:a"], "metadata": {"x": "y"}}),
            orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5, "cache": True})]
    for raw in same:
        assert (await post(gw, raw, USE if b'"cache"' not in raw else {}))[1]["X-Cache"] == "hit"
    status, headers, _ = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.7}, USE)
    assert headers["X-Cache"] == "miss"
    status, headers, _ = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5})
    assert "X-Cache" not in headers  # not asked for: neither read nor stored
    assert len(fake_openai.requests) == 3


async def test_one_caller_never_sees_another_callers_answers(gateway, fake_openai):
    keys = [{"id": "a", "sha256": digest("key-a")}, {"id": "b", "sha256": digest("key-b")}]
    gw = await gateway(config(fake_openai, auth={"keys": keys}))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    await post(gw, body, {**USE, "X-API-Key": "key-a"})
    await gw.records()
    assert (await post(gw, body, {**USE, "X-API-Key": "key-b"}))[1]["X-Cache"] == "miss"
    assert (await post(gw, body, {**USE, "X-API-Key": "key-a"}))[1]["X-Cache"] == "hit"


async def test_a_plain_answer_is_replayed_as_a_stream(gateway, fake_openai, monkeypatch):
    gw = await gateway(config(fake_openai))
    _, _, plain = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES}, USE)
    await gw.records()
    writes = count_writes_to_clients(monkeypatch, gw.port)
    status, headers, raw = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True,
                                           "stream_options": {"include_usage": True}}, USE)
    assert status == 200 and headers["X-Cache"] == "hit" and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == orjson.loads(plain)["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["total_tokens"] == 22 and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert len(fake_openai.requests) == 1
    assert len(writes) == 1  # the head, every event and the chunked end in one write


async def test_a_streamed_answer_is_stored_and_serves_plain_requests(gateway, fake_openai):
    gw = await gateway(config(fake_openai))
    status, _, streamed = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}, USE)
    assert status == 200
    await gw.records()
    status, headers, plain = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES}, USE)
    assert headers["X-Cache"] == "hit"
    answer = orjson.loads(plain)
    assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] == 22
    assert answer["choices"][0]["message"]["content"] == "Hello there, how can I help you today?"
    status, headers, again = await post(gw, {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}, USE)
    assert headers["X-Cache"] == "hit" and b'"usage"' not in again  # not asked for, not sent
    assert len(fake_openai.requests) == 1


async def test_an_incomplete_stream_is_not_stored(gateway, fake_openai):
    fake_openai.default = Behaviour(end="fin", cut_after=3)
    gw = await gateway(config(fake_openai))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    await post(gw, body, USE)
    await gw.records()
    fake_openai.default = Behaviour()
    await post(gw, body, USE)
    assert len(fake_openai.requests) == 2


async def test_two_gateways_on_one_redis_share_the_cache(gateway, fake_openai, redis_url):
    one = await gateway(config(fake_openai, storeUrl=redis_url, secretKey="shared"))
    two = await gateway(config(fake_openai, storeUrl=redis_url, secretKey="shared"))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    _, _, first = await post(one, body, USE)
    await one.records()
    status, headers, second = await post(two, body, USE)
    assert headers["X-Cache"] == "hit" and second == first and len(fake_openai.requests) == 1
