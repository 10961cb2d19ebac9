"""The Messages API routes: Claude Code's request shape replayed, the gateway's own errors in
Anthropic's shape, count_tokens and the model list's edges."""

from __future__ import annotations

import anthropic
import orjson
import pytest

from proxy.pipeline.auth import digest
from tests.conftest import openai_provider
from tests.fakes.anthropic import text, tool
from tests.pipeline.test_messages_api_sdk import anthropic_provider

KEY = "claude-code-gateway-token-0001"
ASK_HI = [{"role": "user", "content": "hi"}]
BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"]
# The shape of Claude Code's main request, as its LLM-gateway guide describes it: system blocks
# with cache_control, user turns of several text blocks, its tools, metadata.user_id, max_tokens
# 32000, temperature 1, streamed, `?beta=true` and several beta flags.
SYSTEM = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
           "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks.",
           "cache_control": {"type": "ephemeral"}}]
TURNS = [{"role": "user", "content": [
    {"type": "text", "text": "<system-reminder>As you answer, use the tools.</system-reminder>"},
    {"type": "text", "text": "list the files here", "cache_control": {"type": "ephemeral"}}]}]
TOOLS = [{"name": "Bash", "description": "Executes a bash command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                            "timeout": {"type": "number"}},
                           "required": ["command"], "additionalProperties": False,
                           "$schema": "http://json-schema.org/draft-07/schema#"}},
         {"name": "Read", "description": "Reads a file",
          "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                           "required": ["file_path"]}, "cache_control": {"type": "ephemeral"}}]


def _keyed(providers: list) -> dict:
    return {"providers": providers, "auth": {"keys": [{"id": "cc", "sha256": digest(KEY)}]}}


def claude_code(gw) -> anthropic.AsyncAnthropic:  # ANTHROPIC_BASE_URL=gateway, ANTHROPIC_AUTH_TOKEN=key
    return anthropic.AsyncAnthropic(base_url=gw.url, auth_token=KEY, max_retries=0,
                                    default_headers={"x-app": "cli", "anthropic-dangerous-direct-browser-access": "true"})


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_claude_codes_request_shape_gets_an_answer_its_parser_accepts(kind, gateway, fake_openai, fake_anthropic):
    from tests.fakes.openai import Behaviour

    fake = fake_openai if kind == "openai" else fake_anthropic
    provider = openai_provider(fake, models=("claude-sonnet-4-5",)) if kind == "openai" else \
        anthropic_provider(fake, models=("claude-sonnet-4-5",))
    gw = await gateway(_keyed([provider]))
    if kind == "openai":
        fake.default = Behaviour(deltas=[{"content": "I'll list them."}, {"tool_calls": [
            {"index": 0, "id": "call_ls", "type": "function", "function": {"name": "Bash", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"command": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"ls"}'}}]}], finish="tool_calls")
    else:
        fake.content, fake.stop_reason = [text("I'll list them."), tool("call_ls", "Bash", ['{"command": ', '"ls"}'])], \
            "tool_use"
    async with claude_code(gw) as sdk:
        async with sdk.beta.messages.stream(model="claude-sonnet-4-5", max_tokens=32000, system=SYSTEM,
                                            messages=TURNS, tools=TOOLS, betas=BETAS, extra_body={"temperature": 1},
                                            metadata={"user_id": "user_abc_account__session_1"}) as stream:
            final = await stream.get_final_message()
        counted = await sdk.beta.messages.count_tokens(model="claude-sonnet-4-5", system=SYSTEM, messages=TURNS,
                                                      tools=TOOLS, betas=["token-counting-2024-11-01"])
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert (final.content[1].name, final.content[1].input, final.stop_reason) == ("Bash", {"command": "ls"}, "tool_use")
    assert counted.input_tokens > 0
    seen = fake.requests[0]
    if kind == "anthropic":  # passed through: body untouched but for the model, betas forwarded
        assert seen.body["system"] == SYSTEM and seen.body["tools"] == TOOLS and seen.body["messages"] == TURNS
        assert seen.headers["anthropic-beta"] == ",".join(BETAS) and "x-app" not in seen.headers
        assert fake.requests[1].path == "/v1/messages/count_tokens"
        assert "token-counting-2024-11-01" in fake.requests[1].headers["anthropic-beta"]
    else:  # translated: no trace of the Messages-only fields
        assert b"cache_control" not in orjson.dumps(seen.body) and "anthropic-beta" not in seen.headers
        assert seen.body["messages"][0] == {"role": "system", "content": SYSTEM[0]["text"] + "\n\n" + SYSTEM[1]["text"]}
        assert seen.body["messages"][1]["content"] == [{"type": "text", "text": t["text"]} for t in TURNS[0]["content"]]
        assert seen.body["user"] == "user_abc_account__session_1" and seen.body["max_tokens"] == 32000
        assert [t["function"]["name"] for t in seen.body["tools"]] == ["Bash", "Read"]
        assert len(fake.requests) == 1  # counting never reached the provider
    records = await gw.records()
    assert [(r.endpoint, r.api_key_id, r.status) for r in records] == [("messages", "cc", "completed")]


async def test_the_query_beta_true_and_both_key_headers_are_accepted(gateway, fake_openai):
    gw = await gateway(_keyed([openai_provider(fake_openai, models=("m",))]))
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        async with gw.post("/v1/messages?beta=true", json=body, headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["type"] == "message"


async def _error(resp) -> tuple[int, str, dict]:
    body = orjson.loads(await resp.read())
    assert set(body) == {"type", "error"} and body["type"] == "error" and resp.headers["request-id"]
    assert resp.headers["request-id"] == resp.headers["X-Request-Id"]
    return resp.status, body["error"]["type"], resp.headers


async def test_the_gateways_own_errors_are_in_anthropic_shape(gateway, fake_openai):
    config = {"providers": [openai_provider(fake_openai, models=("m", "other"))],
              "auth": {"keys": [{"id": "cc", "sha256": digest(KEY), "rpm": 2, "models": ["m"]}]},
              "limits": {"maxBodyBytes": 4096, "maxInFlight": 1}}
    gw = await gateway(config)
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    auth = {"x-api-key": KEY}
    async with gw.post("/anthropic/v1/messages", json=body) as resp:
        assert (await _error(resp))[:2] == (401, "authentication_error")
    async with gw.post("/anthropic/v1/messages", json={**body, "model": "other"}, headers=auth) as resp:
        assert (await _error(resp))[:2] == (403, "permission_error")
    async with gw.post("/v1/messages", data=b"x" * 5000, headers=auth) as resp:
        assert (await _error(resp))[:2] == (413, "request_too_large")
    async with gw.get("/anthropic/v1/nothing-here", headers=auth) as resp:
        assert (await _error(resp))[:2] == (404, "not_found_error")
    gw.gw.metrics.in_flight += 1  # one request already being served: the cap of one is reached
    async with gw.post("/v1/messages", json=body, headers=auth) as resp:
        status, kind, headers = await _error(resp)
        assert (status, kind) == (503, "overloaded_error") and headers["Retry-After"]
    gw.gw.metrics.in_flight -= 1
    async with gw.post("/v1/messages", json=body, headers=auth) as resp:
        assert resp.status == 200
    async with gw.post("/v1/messages", json=body, headers=auth) as resp:  # rpm 2: the 403 and the 200 counted
        status, kind, headers = await _error(resp)
        assert (status, kind) == (429, "rate_limit_error") and int(headers["Retry-After"]) >= 1
    async with gw.get("/anthropic/v1/models?limit=0", headers=auth) as resp:
        assert (await _error(resp))[:2] == (400, "invalid_request_error")
    async with gw.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                       headers=auth) as resp:  # chat's routes keep OpenAI's shape
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"


async def test_count_tokens_errors_are_in_anthropic_shape_and_unrecorded(gateway, fake_anthropic):
    fake_anthropic.error = (400, "invalid_request_error")
    gw = await gateway({"providers": [anthropic_provider(fake_anthropic, models=("m",))]})
    async with gw.post("/anthropic/v1/messages/count_tokens", json={"model": "m", "messages": []}) as resp:
        assert (await _error(resp))[:2] == (400, "invalid_request_error")  # ours: no provider asked
    assert fake_anthropic.requests == []
    async with gw.post("/v1/messages/count_tokens", json={"model": "nope", "messages": [
            {"role": "user", "content": "x"}]}) as resp:  # never a 404: an estimate
        assert resp.status == 200 and (await resp.json())["input_tokens"] > 0
    fake_anthropic.error = (529, "overloaded_error")
    async with gw.post("/v1/messages/count_tokens", json={"model": "m", "messages": [
            {"role": "user", "content": "x"}]}) as resp:  # the provider cannot count now: an estimate
        assert resp.status == 200 and (await resp.json())["input_tokens"] > 0
    assert len(fake_anthropic.requests) == 1
    fake_anthropic.error = (400, "invalid_request_error")
    async with gw.post("/v1/messages/count_tokens", json={"model": "m", "messages": [
            {"role": "user", "content": "x"}]}) as resp:  # the provider refused the request: its error
        assert (await _error(resp))[:2] == (400, "invalid_request_error")
    assert await gw.records() == []


async def test_a_server_tool_is_passed_through_to_a_provider_that_speaks_messages(gateway, fake_anthropic, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",)),
                                      anthropic_provider(fake_anthropic, models=("m",))]})
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "news?"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}
    for _ in range(3):  # whatever the order the router picks, only the provider that can carry it is asked
        async with gw.post("/v1/messages", json=body) as resp:
            assert resp.status == 200
    assert fake_openai.requests == [] and len(fake_anthropic.requests) == 3
    assert fake_anthropic.requests[0].body["tools"] == body["tools"]


async def test_failover_from_a_passthrough_to_a_translated_provider_mid_request(gateway, fake_anthropic, fake_openai):
    fake_anthropic.error = (529, "overloaded_error")
    first = {**anthropic_provider(fake_anthropic, models=("m",)), "isHosted": True}  # hosted: tried first
    second = {**openai_provider(fake_openai, models=("m",)), "isHosted": False}
    gw = await gateway({"providers": [first, second]})
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "top_k": 3}
    for stream in (False, True):
        async with gw.post("/v1/messages", json={**body, "stream": stream}) as resp:
            raw = await resp.read()
        assert resp.status == 200
        if stream:
            assert raw.startswith(b"event: message_start") and raw.endswith(b'data: {"type":"message_stop"}\n\n')
        else:
            assert orjson.loads(raw)["content"] == [{"type": "text", "text": "Hello there, how can I help you today?"}]
    assert len(fake_anthropic.requests) == 2 and fake_anthropic.requests[0].body["top_k"] == 3  # as it came
    assert len(fake_openai.requests) == 2 and "top_k" not in fake_openai.requests[0].body  # translated
    records = await gw.records()
    assert [(r.provider, r.attempts, r.recovered) for r in records] == [("fake", 2, True)] * 2


async def test_the_response_cache_serves_translated_answers_and_never_stores_a_passthrough(
        gateway, fake_openai, fake_anthropic):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",)),
                                      anthropic_provider(fake_anthropic, models=("claude",))],
                        "cache": {"enabled": True}})
    use = {"X-Cache": "use"}
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0, default_headers=use) as sdk:
        first = await sdk.messages.with_raw_response.create(model="m", max_tokens=9, messages=ASK_HI)
        again = await sdk.messages.with_raw_response.create(model="m", max_tokens=9, messages=ASK_HI)
        async with sdk.messages.stream(model="m", max_tokens=9, messages=ASK_HI) as stream:
            streamed = await stream.get_final_message()
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
        made, hit = await first.parse(), await again.parse()
        assert again.headers["request-id"] and hit.content == made.content and hit.usage == made.usage
        assert [b.text for b in streamed.content] == [b.text for b in made.content] and streamed.stop_reason == "end_turn"
        assert len(fake_openai.requests) == 1  # the hits never reached the provider
        for _ in range(2):  # the provider's own Messages answer is not a chat answer: never stored
            await sdk.messages.create(model="claude", max_tokens=9, messages=ASK_HI)
        assert len(fake_anthropic.requests) == 2
    records = await gw.records()
    assert [r.cache_hit for r in records] == [False, True, True, False, False]
    assert {r.endpoint for r in records} == {"messages"}
