"""The chat route through real loopback HTTP: relay, usage, tags, errors, records."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import PROVIDER_KEY, openai_provider
from tests.fakes.openai import Behaviour

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


CANARY = "canary-5eCr3t-value"
HOP_BY_HOP = ("Connection", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization", "X-Foo", "Cookie",
              "Forwarded", "X-Forwarded-For", "X-Api-Key")


async def test_r28_caller_credentials_and_hop_by_hop_headers_never_reach_the_provider(gateway, fake_openai):
    import random

    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    rng = random.Random(28)
    pool = [("Authorization", f"Bearer {CANARY}"), ("X-API-Key", CANARY), ("Cookie", f"session={CANARY}"),
            ("Proxy-Authorization", f"Basic {CANARY}"), ("Connection", "X-Foo"), ("X-Foo", CANARY),
            ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Upgrade", "websocket"),
            ("Forwarded", f"for={CANARY}"), ("X-Forwarded-For", "6.6.6.6"), ("Host", "evil.example")]
    for _ in range(1000):
        headers = dict(rng.sample(pool, rng.randint(1, len(pool))))
        if "Authorization" in headers and "X-API-Key" in headers:
            del headers["X-API-Key"]
        async with gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                           headers=headers) as r:
            assert r.status == 200
    assert len(fake_openai.requests) == 1000
    for seen in fake_openai.requests:
        flat = repr(sorted(seen.headers.items()))
        assert CANARY not in flat
        lowered = {k.lower() for k in seen.headers}
        assert not lowered & {h.lower() for h in HOP_BY_HOP if h not in ("Connection",)}
        assert seen.headers.get("Connection", "keep-alive").lower() in ("keep-alive", "close")
        assert seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}-fake"  # exactly one credential
        assert seen.headers["Host"] == fake_openai.root.removeprefix("http://")


async def test_upstream_set_cookie_is_not_passed_back(gateway, fake_openai):
    fake_openai.default = Behaviour(headers={"Set-Cookie": "upstream=1"})
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}) as r:
        assert r.status == 200 and "Set-Cookie" not in r.headers


async def test_tags_from_body_and_headers_are_merged_and_not_forwarded(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "tags": ["team:a", "env:prod"]}
    headers = {"X-Tags": "env:prod, feature:chat", "X-LiteLLM-Tags": "team:a,user:u-1"}
    async with gw.post("/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
    assert "tags" not in fake_openai.requests[0].body
    (record,) = await gw.records()
    assert record.tags == ["team:a", "env:prod", "feature:chat", "user:u-1"]


@pytest.mark.parametrize(("tags", "header", "bad"), [
    (["nocolon"], None, "nocolon"), (["-a:b"], None, "-a:b"), (["a:b-"], None, "a:b-"),
    (["a" * 65 + ":b"], None, "a" * 65), (None, "ok:1,bad tag:x", "bad tag:x"), (["a:b c"], None, "a:b c"),
    ([f"k{i}:v" for i in range(11)], None, "too many tags")])
async def test_invalid_tags_are_a_400_naming_the_tag(gateway, fake_openai, tags, header, bad):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    if tags is not None:
        body["tags"] = tags
    async with gw.post("/v1/chat/completions", json=body, headers={"X-Tags": header} if header else {}) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert bad in error["message"] and error["code"] == "invalid_tag"
    assert fake_openai.requests == []
    (record,) = await gw.records()
    assert record.status == "rejected"


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"not json", 400, None), (b"[1,2]", 400, None), (b'{"messages":[{"role":"user","content":"x"}]}', 400, "model"),
    (b'{"model":"gpt-4o-mini"}', 400, "messages"), (b'{"model":"gpt-4o-mini","messages":[]}', 400, "messages"),
    (b'{"model":"gpt-4o-mini","messages":"hi"}', 400, "messages"),
    (b'{"model":"gpt-4o-mini","messages":[{"role":"wizard"}]}', 400, "messages[0].role"),
    (b'{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":"yes"}', 400, "stream"),
    (b'{"model":7,"messages":[{"role":"user"}]}', 400, "model"),
    (b'{"model":"gpt-4o-mini","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),
    (b'{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}', 404, "model"),
    (b"\xff\xfe", 400, None)])
async def test_bad_input_is_an_openai_shaped_error_not_a_500(gateway, fake_openai, body, status, param):
    gw = await gateway({"providers": [openai_provider(fake_openai)]})
    async with gw.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"
    assert fake_openai.requests == []


async def test_body_over_the_limit_is_a_413_without_an_upstream_call(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai)], "limits": {"maxBodyBytes": 1024 * 1024}})
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    async with gw.post("/v1/chat/completions", json=big) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "request_too_large"

    async def chunked():
        yield b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    async with gw.post("/v1/chat/completions", data=chunked()) as r:
        assert r.status == 413
    assert fake_openai.requests == []


async def test_provider_pinning_and_the_served_model(gateway, fake_openai, aiohttp_server):
    from tests.fakes.openai import FakeOpenAI
    other = await FakeOpenAI().start(aiohttp_server)
    gw = await gateway({"providers": [openai_provider(fake_openai, name="one", weight=1000),
                                      openai_provider(other, name="two", isHosted=False)]})
    for _ in range(3):
        async with gw.post("/v1/chat/completions", json={"model": "two/gpt-4o-mini", "messages": MESSAGES}) as r:
            assert r.status == 200
    assert len(other.requests) == 3 and fake_openai.requests == []
    assert other.requests[0].body["model"] == "gpt-4o-mini"
    async with gw.post("/v1/chat/completions", json={"model": "two/unknown", "messages": MESSAGES}) as r:
        assert r.status == 404
    records = await gw.records()
    assert {(r.model_requested, r.provider) for r in records[:3]} == {("two/gpt-4o-mini", "two")}


async def test_hosted_providers_come_first(gateway, fake_openai, aiohttp_server):
    from tests.fakes.openai import FakeOpenAI
    cloud = await FakeOpenAI().start(aiohttp_server)
    gw = await gateway({"providers": [openai_provider(cloud, name="cloud", isHosted=False, weight=1000),
                                      openai_provider(fake_openai, name="hosted", isHosted=True)]})
    for _ in range(10):
        async with gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}) as r:
            assert r.status == 200
    assert len(fake_openai.requests) == 10 and cloud.requests == []


async def test_weighted_least_in_flight_spreads_concurrent_load(gateway, fake_openai, aiohttp_server):
    import asyncio

    from tests.fakes.openai import FakeOpenAI
    second = await FakeOpenAI().start(aiohttp_server)
    for fake in (fake_openai, second):
        fake.default = Behaviour(delay_headers=0.2)
    gw = await gateway({"providers": [openai_provider(fake_openai, name="one", weight=3),
                                      openai_provider(second, name="two", weight=1)]})

    async def one():
        async with gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}) as r:
            assert r.status == 200

    await asyncio.gather(*(one() for _ in range(40)))
    assert len(fake_openai.requests) == 30 and len(second.requests) == 10


async def test_embeddings_route_to_openai_wire_providers(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("text-embedding-3-small",))]})
    async with gw.post("/openai/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello"}) as r:
        assert r.status == 200
        assert (await r.json())["data"][0]["embedding"] == [0.1, -0.2, 0.3]
    assert fake_openai.requests[0].path == "/v1/embeddings"
    (record,) = await gw.records()
    assert record.prompt_tokens == 5


async def test_demo_model_answers_on_the_embedded_defaults(gateway):
    from proxy.providers.mock import demo_item
    gw = await gateway({"providers": [orjson.loads(__import__("msgspec").json.encode(demo_item()))]})
    async with gw.post("/openai/v1/chat/completions", json={"model": "mock-gpt", "messages": MESSAGES}) as r:
        assert r.status == 200
        assert "mock-gpt" in (await r.json())["choices"][0]["message"]["content"]
