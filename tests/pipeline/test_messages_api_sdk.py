"""The official `anthropic` SDK through the gateway's Messages API, against three upstreams: an
OpenAI-wire provider (translated), an Anthropic provider (passed through) and MOCK (in process)."""

from __future__ import annotations

import anthropic
import orjson
import pytest

from tests.conftest import PROVIDER_KEY, openai_provider
from tests.fakes import anthropic as fakes
from tests.fakes.anthropic import FakeAnthropic, text, tool
from tests.fakes.openai import Behaviour

ASK = [{"role": "user", "content": "Say hello"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def anthropic_provider(fake: FakeAnthropic, models=("claude-up",)) -> dict:
    return fakes.provider(fake, models, key=PROVIDER_KEY + "-anth")


@pytest.fixture(params=["openai", "anthropic", "mock"])
async def upstream(request, gateway, fake_openai, fake_anthropic):
    """(kind, gateway, model, fake) for each upstream wire."""
    kind = request.param
    if kind == "openai":
        gw = await gateway({"providers": [openai_provider(fake_openai, models=("up-model",))]})
        return kind, gw, "up-model", fake_openai
    if kind == "anthropic":
        gw = await gateway({"providers": [anthropic_provider(fake_anthropic, models=("up-model",))]})
        return kind, gw, "up-model", fake_anthropic
    gw = await gateway({"providers": [{"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"],
                                       "isHosted": True}]})
    return kind, gw, "mock-gpt", None


def client(gw, base: str = "/anthropic") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url + base, api_key="caller-key", max_retries=0)


def expected_text(kind: str) -> str | None:
    return {"openai": "Hello there, how can I help you today?", "anthropic": "Hello from the Messages API."}.get(kind)


async def test_create(upstream):
    kind, gw, model, fake = upstream
    async with client(gw) as sdk:
        message = await sdk.messages.create(model=model, max_tokens=100, messages=ASK,
                                            extra_headers={"anthropic-beta": "flag-a,flag-b"})
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == expected_text(kind) or (kind == "mock" and "mock model" in message.content[0].text)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    records = await gw.records()
    assert [r.endpoint for r in records] == ["messages"] and records[0].status == "completed"
    assert records[0].completion_tokens == message.usage.output_tokens
    if kind == "openai":  # usage: input excludes the cached tokens the provider reported
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (10, 2)
        assert fake.requests[0].body["max_tokens"] == 100 and fake.requests[0].body["messages"] == ASK
        assert "anthropic-beta" not in fake.requests[0].headers
    if kind == "anthropic":  # passthrough: the caller's body as it came, the answer as the provider sent it
        seen = fake.requests[0]
        assert seen.body == {"model": model, "max_tokens": 100, "messages": ASK}
        assert seen.headers["x-api-key"] == PROVIDER_KEY + "-anth"
        assert seen.headers["anthropic-beta"] == "flag-a,flag-b"
        assert seen.headers["anthropic-version"] == sdk.default_headers["anthropic-version"]  # the caller's
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (21, 5)
        assert records[0].prompt_tokens == 26 and records[0].cached_tokens == 5


async def test_stream_and_final_message(upstream):
    kind, gw, model, fake = upstream
    async with client(gw) as sdk:
        async with sdk.messages.stream(model=model, max_tokens=100, messages=ASK) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == final.content[0].text
    if kind != "mock":
        assert final.content[0].text == expected_text(kind)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    records = await gw.records()
    assert records[0].endpoint == "messages" and records[0].stream and records[0].status == "completed"
    assert not records[0].tokens_estimated
    if kind == "openai":
        assert fake.requests[0].body["stream_options"] == {"include_usage": True}
        assert final.usage.input_tokens == 10 and final.usage.output_tokens == 10


def _tool_upstream(kind: str, fake, calls: list[tuple[str, str, list[str]]], interleave: bool = False):
    """The provider answers with these tool calls (id, name, argument pieces), in its own wire."""
    if kind == "anthropic":
        fake.content = [text("Let me look.")] + [tool(*call) for call in calls]
        fake.stop_reason = "tool_use"
        return
    heads = [{"tool_calls": [{"index": i, "id": ident, "type": "function", "function": {"name": name, "arguments": ""}}]}
             for i, (ident, name, _) in enumerate(calls)]
    pieces = [[{"tool_calls": [{"index": i, "function": {"arguments": piece}}]} for piece in call[2]]
              for i, call in enumerate(calls)]
    deltas = [{"content": "Let me look."}]
    if interleave:  # both heads first, then the argument pieces alternating between the calls
        deltas += heads + [d for pair in zip(*pieces, strict=True) for d in pair]
    else:
        for head, own in zip(heads, pieces, strict=True):
            deltas += [head, *own]
    fake.default = Behaviour(deltas=deltas, finish="tool_calls")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_streamed_tool_call_whose_arguments_arrive_in_pieces(kind, gateway, fake_openai, fake_anthropic):
    fake = fake_openai if kind == "openai" else fake_anthropic
    provider = openai_provider(fake, models=("m",)) if kind == "openai" else anthropic_provider(fake, models=("m",))
    gw = await gateway({"providers": [provider]})
    _tool_upstream(kind, fake, [("call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])])
    deltas = []
    async with client(gw) as sdk:
        async with sdk.messages.stream(model="m", max_tokens=100, messages=ASK, tools=[WEATHER]) as stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    deltas.append(event.delta.partial_json)
            final = await stream.get_final_message()
    assert deltas == ['{"ci', 'ty": "Pa', 'ris"}']  # relayed piece by piece, not gathered
    assert [block.type for block in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert (call.id, call.name, call.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    if kind == "openai":
        assert fake.requests[0].body["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "parameters": WEATHER["input_schema"], "description": WEATHER["description"]}}]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_two_interleaved_tool_calls_come_out_as_sequential_blocks(kind, gateway, fake_openai, fake_anthropic):
    fake = fake_openai if kind == "openai" else fake_anthropic
    provider = openai_provider(fake, models=("m",)) if kind == "openai" else anthropic_provider(fake, models=("m",))
    gw = await gateway({"providers": [provider]})
    _tool_upstream(kind, fake, [("call_a", "get_weather", ['{"city"', ': "Paris"}']),
                                ("call_b", "get_weather", ['{"city"', ': "Rome"}'])], interleave=True)
    opened: list[int] = []
    async with client(gw) as sdk:
        async with sdk.messages.stream(model="m", max_tokens=100, messages=ASK, tools=[WEATHER]) as stream:
            async for event in stream:
                if event.type == "content_block_start":
                    assert len(opened) == event.index  # dense, in order
                    opened.append(event.index)
                elif event.type in ("content_block_delta", "content_block_stop"):
                    assert event.index == opened[-1]  # only the open block gets pieces
            final = await stream.get_final_message()
    assert [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in final.content] == [
        ("text", None, None), ("tool_use", "call_a", {"city": "Paris"}), ("tool_use", "call_b", {"city": "Rome"})]
    assert final.stop_reason == "tool_use"


async def test_a_tool_round_trip_is_translated_for_an_openai_wire_provider(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",))]})
    fake_openai.default = Behaviour(message={"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        finish="tool_calls")
    async with client(gw) as sdk:
        first = await sdk.messages.create(model="m", max_tokens=50, messages=ASK, tools=[WEATHER],
                                          tool_choice={"type": "any", "disable_parallel_tool_use": True})
        assert first.stop_reason == "tool_use" and first.content[0].input == {"city": "Oslo"}
        fake_openai.default = Behaviour()
        turns = [*ASK, {"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "12 C",
                                               "is_error": False}, {"type": "text", "text": "And tomorrow?"}]}]
        second = await sdk.messages.create(model="m", max_tokens=50, messages=turns, tools=[WEATHER])
    assert second.stop_reason == "end_turn"
    sent = fake_openai.requests[0].body
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    assert fake_openai.requests[1].body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "12 C"},
        {"role": "user", "content": "And tomorrow?"}]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "mock"])
async def test_count_tokens_is_asked_of_a_messages_provider_else_estimated_and_never_recorded(
        kind, gateway, fake_openai, fake_anthropic):
    providers = {"openai": [openai_provider(fake_openai, models=("m",))],
                 "anthropic": [anthropic_provider(fake_anthropic, models=("m",))],
                 "mock": [{"name": "mock", "supportedProvider": "MOCK", "models": ["m"], "isHosted": True}]}
    gw = await gateway({"providers": providers[kind]})
    async with client(gw) as sdk:
        counted = await sdk.messages.count_tokens(model="m", messages=ASK, system="Be brief.")
    if kind == "anthropic":
        assert counted.input_tokens == 1001
        assert fake_anthropic.requests[0].path == "/v1/messages/count_tokens"
        assert fake_anthropic.requests[0].body == {"model": "m", "messages": ASK, "system": "Be brief."}
    else:
        assert 0 < counted.input_tokens < 100
        assert fake_openai.requests == []
    assert await gw.records() == []


async def test_models_in_the_anthropic_list_shape(gateway, fake_openai):
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("b-model", "a-model", "c-model"))]})
    async with client(gw) as sdk:
        page = await sdk.models.list(limit=2)
        assert [m.id for m in page.data] == ["a-model", "b-model"] and page.has_more
        assert [m.id async for m in await sdk.models.list(limit=2)] == ["a-model", "b-model", "c-model"]
    async with client(gw, "") as sdk:  # `/v1/models` answers an Anthropic client in its shape too
        assert [m.display_name for m in (await sdk.models.list()).data] == ["a-model", "b-model", "c-model"]
    async with gw.get("/v1/models") as plain:  # and OpenAI's clients in theirs
        assert (await plain.json())["object"] == "list"


async def test_errors_are_in_anthropic_shape_with_a_request_id(gateway, fake_openai):
    key = "caller-key-0123456789"
    import hashlib
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",))],
                        "auth": {"keys": [{"id": "k1", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                                           "models": ["m"]}]}})
    async with anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as err:
            await sdk.messages.create(model="m", max_tokens=10, messages=ASK)
    assert err.value.body["error"]["type"] == "authentication_error" and err.value.request_id
    async with anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", auth_token=key, max_retries=0) as sdk:
        with pytest.raises(anthropic.NotFoundError) as err:
            await sdk.messages.create(model="nope", max_tokens=10, messages=ASK)
        assert err.value.body == {"type": "error", "error": {"type": "not_found_error", "message": err.value.body[
            "error"]["message"]}} and err.value.request_id
        with pytest.raises(anthropic.BadRequestError) as err:
            await sdk.messages.create(model="m", max_tokens=10, messages=ASK,
                                      tools=[{"type": "web_search_20250305", "name": "web_search"}])
        assert "tools[0]" in err.value.message
        fake_openai.default = Behaviour(status=429, headers={"Retry-After": "7"})
        with pytest.raises(anthropic.RateLimitError) as err:
            await sdk.messages.create(model="m", max_tokens=10, messages=ASK)
        assert err.value.body["error"]["type"] == "rate_limit_error"
        assert err.value.response.headers["retry-after"] == "7"
    async with gw.post("/anthropic/v1/nowhere", json={}) as missing:
        assert missing.status == 404 and missing.headers["request-id"]
        assert orjson.loads(await missing.read())["error"]["type"] == "not_found_error"
    async with gw.post("/v1/messages", data=b"{", headers={"x-api-key": key}) as broken:
        assert broken.status == 400 and (await broken.json())["type"] == "error"


async def test_a_stream_that_breaks_off_ends_with_an_error_event(gateway, fake_openai):
    fake_openai.default = Behaviour(content=["x"] * 20, cut_after=5, end="fin")
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",))]})
    async with gw.post("/v1/messages", json={"model": "m", "max_tokens": 10, "messages": ASK, "stream": True}) as r:
        raw = await r.read()
    assert r.status == 200 and r.headers["request-id"]
    frames = raw.split(b"\n\n")
    assert frames[0].startswith(b"event: message_start") and b"event: message_stop" not in raw
    assert frames[-2].startswith(b"event: error\ndata: ")
    assert orjson.loads(frames[-2].split(b"data: ")[1])["error"]["type"] == "api_error"
    records = await gw.records()
    assert records[0].status == "upstream_truncated" and records[0].endpoint == "messages"
