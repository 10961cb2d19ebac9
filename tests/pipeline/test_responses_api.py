"""The official `openai` SDK (and the Agents SDK) through the gateway's Responses API, against three
upstreams: an OpenAI-wire provider that speaks only chat (translated), a provider speaking the
Responses API (passed through) and MOCK (in process)."""

from __future__ import annotations

import openai
import orjson
import pydantic
import pytest

from tests.conftest import PROVIDER_KEY, openai_provider
from tests.fakes import anthropic as anthropic_wire
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import Behaviour, FakeOpenAI
from tests.fakes.openai_responses import FakeResponses, call, text

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


class ScriptedOpenAI(FakeOpenAI):
    """The chat fake, answering each request with the next turn of `script` (then its default)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Behaviour] = []

    def behaviour(self, model: str) -> Behaviour:
        return self.script.pop(0) if self.script else super().behaviour(model)


class ScriptedAnthropic(FakeAnthropic):
    """The Anthropic fake, answering each request with the next turn of `script`."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[list[dict]] = []

    async def _messages(self, request):
        if self.script:
            turn = self.script.pop(0)
            self.content = [anthropic_wire.text("".join(item["pieces"])) if item["type"] == "message"
                            else anthropic_wire.tool(item["call_id"], item["name"], item["pieces"]) for item in turn]
            self.stop_reason = "tool_use" if any(item["type"] != "message" for item in turn) else "end_turn"
        return await super()._messages(request)


def chat_turn(items: list[dict]) -> Behaviour:
    """The same turn (`tests.fakes.openai_responses` items) in the chat wire, streamed or whole."""
    deltas, calls, texts = [], [], []
    for item in items:
        if item["type"] == "message":
            deltas += [{"content": piece} for piece in item["pieces"]]
            texts.append("".join(item["pieces"]))
            continue
        index = len(calls)
        deltas.append({"tool_calls": [{"index": index, "id": item["call_id"], "type": "function",
                                       "function": {"name": item["name"], "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]} for piece in item["pieces"]]
        calls.append({"id": item["call_id"], "type": "function",
                      "function": {"name": item["name"], "arguments": "".join(item["pieces"])}})
    message = {"role": "assistant", "content": "".join(texts) or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return Behaviour(deltas=deltas, message=message, finish="tool_calls" if calls else "stop")


class Upstream:
    """One gateway over one upstream wire, scripted the same way whatever the wire."""

    def __init__(self, kind: str, gw, fake) -> None:
        self.kind, self.gw, self.fake, self.model = kind, gw, fake, "mock-gpt" if kind == "mock" else "up-model"

    def script(self, *turns: list[dict]) -> None:
        if self.kind in ("responses", "anthropic"):
            self.fake.script = list(turns)
        elif self.kind == "chat":
            self.fake.script = [chat_turn(turn) for turn in turns]

    def client(self, base: str = "/openai/v1") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gw.url + base, api_key="caller-key", max_retries=0)

    @property
    def bodies(self) -> list[dict]:
        return [seen.body for seen in self.fake.requests] if self.fake is not None else []


def responses_provider(fake: FakeResponses, kind: str = "OPENAI", **extra) -> dict:
    return {"name": "oai", "supportedProvider": kind, "url": fake.url, "apiKey": PROVIDER_KEY + "-oai",
            "models": ["up-model"], "isHosted": True, **extra}


@pytest.fixture
async def fake_responses(aiohttp_server) -> FakeResponses:
    return await FakeResponses().start(aiohttp_server)


@pytest.fixture
async def scripted_openai(aiohttp_server) -> ScriptedOpenAI:
    return await ScriptedOpenAI().start(aiohttp_server)


@pytest.fixture
async def scripted_anthropic(aiohttp_server) -> ScriptedAnthropic:
    return await ScriptedAnthropic().start(aiohttp_server)


async def make_upstream(kind: str, gateway, scripted_openai, fake_responses, config: dict | None = None,
                        anthropic: ScriptedAnthropic | None = None) -> Upstream:
    if kind == "anthropic":  # another translated wire: Responses → chat → Messages
        provider, fake = {"name": "anth", "supportedProvider": "ANTHROPIC", "url": anthropic.url,
                          "apiKey": PROVIDER_KEY + "-anth", "models": ["up-model"], "isHosted": True}, anthropic
    elif kind == "chat":
        provider, fake = openai_provider(scripted_openai, models=("up-model",)), scripted_openai
    elif kind == "responses":
        provider, fake = responses_provider(fake_responses), fake_responses
    else:
        provider, fake = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"], "isHosted": True}, None
    gw = await gateway({"providers": [provider], **(config or {})})
    return Upstream(kind, gw, fake)


@pytest.fixture(params=["chat", "responses", "mock", "anthropic"])
async def upstream(request, gateway, scripted_openai, fake_responses, scripted_anthropic) -> Upstream:
    return await make_upstream(request.param, gateway, scripted_openai, fake_responses, anthropic=scripted_anthropic)


def expected_text(up: Upstream) -> str | None:
    return {"chat": "Hello there, how can I help you today?", "responses": "Hello from the Responses API.",
            "anthropic": "Hello from the Messages API."}.get(up.kind)


async def test_create(upstream):
    up = upstream
    async with up.client() as sdk:
        response = await sdk.responses.create(model=up.model, input="Say hello", instructions="Be brief",
                                              store=False, metadata={"run": "1"}, user="u1")
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text == expected_text(up) or (up.kind == "mock" and "mock model" in response.output_text)
    assert response.usage.output_tokens > 0 and response.usage.input_tokens > 0
    records = await up.gw.records()
    assert [r.endpoint for r in records] == ["responses"] and records[0].status == "completed"
    assert records[0].completion_tokens == response.usage.output_tokens
    if up.kind == "chat":  # translated: the chat body the provider got, and its usage mapped back
        assert up.bodies[0]["messages"] == [{"role": "system", "content": "Be brief"},
                                            {"role": "user", "content": "Say hello"}]
        assert not {"store", "metadata", "user", "instructions", "input"} & set(up.bodies[0])
        assert response.usage.input_tokens_details.cached_tokens == 2
        assert response.usage.output_tokens_details.reasoning_tokens == 3
    if up.kind == "responses":  # passed through: the caller's body as it came, the provider's answer
        seen = up.fake.requests[0]
        assert seen.path == "/v1/responses" and seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}-oai"
        assert seen.body == {"model": "up-model", "input": "Say hello", "instructions": "Be brief", "store": False,
                             "metadata": {"run": "1"}, "user": "u1"}
        assert response.id == "resp_fake0001" and response.usage.input_tokens_details.cached_tokens == 4
        assert (records[0].prompt_tokens, records[0].cached_tokens, records[0].reasoning_tokens) == (36, 4, 6)
    if up.kind == "anthropic":  # translated twice over: Responses → chat → Messages, and back
        assert up.bodies[0]["system"] == "Be brief" and up.bodies[0]["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
        assert (response.usage.input_tokens, response.usage.input_tokens_details.cached_tokens) == (26, 5)


async def test_stream_and_final_response(upstream):
    up = upstream
    async with up.client() as sdk:
        async with sdk.responses.stream(model=up.model, input="Say hello") as stream:
            pieces = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert len(pieces) > 1 and "".join(pieces) == final.output_text
    if up.kind != "mock":
        assert final.output_text == expected_text(up)
    assert final.status == "completed" and final.usage.output_tokens > 0
    records = await up.gw.records()
    assert records[0].endpoint == "responses" and records[0].stream and records[0].status == "completed"
    assert not records[0].tokens_estimated
    assert records[0].completion_tokens == final.usage.output_tokens
    if up.kind == "chat":
        assert up.bodies[0]["stream_options"] == {"include_usage": True}


class City(pydantic.BaseModel):
    city: str
    temperature: int


async def test_parse(upstream):
    up = upstream
    if up.kind == "mock":
        pytest.skip("MOCK answers prose, never the JSON a schema asks for")
    up.script([text('{"city": "Paris", "temperature": 21}')])
    async with up.client() as sdk:
        parsed = await sdk.responses.parse(model=up.model, input="Weather in Paris?", text_format=City)
    assert parsed.output_parsed == City(city="Paris", temperature=21)
    if up.kind == "chat":
        fmt = up.bodies[0]["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"
        assert fmt["json_schema"]["strict"] is True and "temperature" in fmt["json_schema"]["schema"]["properties"]


@pytest.mark.parametrize("stream", [False, True])
async def test_two_turn_tool_round_trip(upstream, stream):
    up = upstream
    if up.kind == "mock":
        pytest.skip("MOCK never calls a tool")
    up.script([text("Let me look."), call("call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])],
              [text("It is sunny in Paris.")])
    history: list = [{"role": "user", "content": "Weather in Paris?"}]
    async with up.client() as sdk:
        if stream:
            async with sdk.responses.stream(model=up.model, input=history, tools=[WEATHER]) as events:
                first = await events.get_final_response()
        else:
            first = await sdk.responses.create(model=up.model, input=history, tools=[WEATHER])
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(c.call_id, c.name, orjson.loads(c.arguments)) for c in calls] == [
            ("call_1", "get_weather", {"city": "Paris"})]
        history += [item.model_dump(exclude_none=True) for item in first.output]
        history.append({"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "sunny"}'})
        second = await sdk.responses.create(model=up.model, input=history, tools=[WEATHER])
    assert second.output_text == "It is sunny in Paris."
    if up.kind == "chat":
        messages = up.bodies[1]["messages"]
        assert messages[1] == {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
        assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'}
        assert up.bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    if up.kind == "responses":
        assert up.bodies[1]["input"][-1] == history[-1]
    if up.kind == "anthropic":
        assert up.bodies[1]["messages"][-1]["content"][0] == {"type": "tool_result", "tool_use_id": "call_1",
                                                              "content": '{"sky": "sunny"}'}
    assert [r.endpoint for r in await up.gw.records()] == ["responses", "responses"]


async def test_agents_sdk_runner_with_a_function_tool(upstream):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # no trace export: the test runs offline
    up = upstream
    up.script([call("call_w", "get_weather", ['{"city": "Paris"}'])], [text("Paris: sunny, 21 C.")])
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny, 21 C in {city}"

    async with up.client() as sdk:
        model = agents.OpenAIResponsesModel(model=up.model, openai_client=sdk)
        agent = agents.Agent(name="Forecaster", instructions="Answer with the weather.", tools=[get_weather],
                             model=model)
        result = await agents.Runner.run(agent, "What is the weather in Paris?")
    if up.kind == "mock":  # MOCK never calls the tool: the agent ends on its answer
        assert "mock model" in result.final_output and asked == []
        return
    assert asked == ["Paris"] and result.final_output == "Paris: sunny, 21 C."
    if up.kind == "chat":
        assert up.bodies[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_w",
                                                "content": "sunny, 21 C in Paris"}


async def test_a_failure_after_the_first_event_ends_in_response_failed(gateway, scripted_openai):
    gw = await gateway({"providers": [openai_provider(scripted_openai, models=("up-model",))]})
    scripted_openai.default = Behaviour(cut_after=3, end="rst")
    async with gw.post("/v1/responses", json={"model": "up-model", "input": "Hi", "stream": True}) as resp:
        assert resp.status == 200
        frames = (await resp.read()).decode().strip().split("\n\n")
    kinds = [frame.split("\n")[0] for frame in frames]
    assert kinds[:2] == ["event: response.created", "event: response.in_progress"]
    assert kinds[-1] == "event: response.failed"
    failed = orjson.loads(frames[-1].split("\n")[1].removeprefix("data: "))
    assert failed["response"]["error"]["code"] == "server_error" and failed["response"]["status"] == "failed"
    assert failed["sequence_number"] == len(frames) - 1
    assert (await gw.records())[0].status == "upstream_truncated"


async def test_a_failure_before_the_first_event_is_an_http_error_in_openai_shape(gateway, scripted_openai):
    gw = await gateway({"providers": [openai_provider(scripted_openai, models=("up-model",))]})
    scripted_openai.default = Behaviour(status=500)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.responses.create(model="up-model", input="Hi", stream=True)
        assert caught.value.status_code == 502 and caught.value.body["type"] == "upstream_error"
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.responses.create(model="no-such-model", input="Hi")
    assert missing.value.body["code"] == "model_not_found" and missing.value.request_id
    assert {r.endpoint for r in await gw.records()} == {"responses"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"), ({"conversation": {"id": "conv_1"}}, "conversation"),
    ({"background": True}, "background"), ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-abc"}]}]}, "input[0].content[0]"),
    ({"tools": [{"type": "image_generation"}]}, "tools[0]"), ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0]"),
])
async def test_what_only_the_providers_own_api_can_do_is_a_400_before_any_upstream_call(
        gateway, scripted_openai, fake_responses, extra, param):
    chat = await make_upstream("chat", gateway, scripted_openai, fake_responses)
    async with chat.client() as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.responses.create(**{"model": "up-model", "input": "Hi", **extra})
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"
    assert chat.fake.requests == []
    passthrough = await make_upstream("responses", gateway, scripted_openai, fake_responses)
    async with passthrough.client() as sdk:
        await sdk.responses.create(**{"model": "up-model", "input": "Hi", **extra})
    assert {key: passthrough.bodies[0][key] for key in extra} == extra  # passed on as it came


async def test_a_model_on_both_wires_sends_what_needs_state_only_to_the_one_speaking_responses(
        gateway, scripted_openai, fake_responses):
    gw = await gateway({"providers": [{**openai_provider(scripted_openai, models=("up-model",)), "weight": 100},
                                      responses_provider(fake_responses)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as sdk:
        for _ in range(3):
            await sdk.responses.create(model="up-model", input="Hi", previous_response_id="resp_0")
    assert scripted_openai.requests == [] and len(fake_responses.requests) == 3


@pytest.mark.parametrize(("version", "path", "query"), [
    ("2024-10-21", "/openai/v1/responses", ""), ("preview", "/openai/v1/responses", ""),
    ("2025-04-01-preview", "/openai/responses", "api-version=2025-04-01-preview")])
async def test_azure_passthrough_urls(gateway, fake_responses, version, path, query):
    provider = {**responses_provider(fake_responses, "AZURE"), "url": fake_responses.root, "apiVersion": version}
    gw = await gateway({"providers": [provider]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as sdk:
        response = await sdk.responses.create(model="up-model", input="Hi")
    seen = fake_responses.requests[0]
    assert (seen.path, seen.query) == (path, query)
    assert seen.headers["api-key"] == PROVIDER_KEY + "-oai" and "Authorization" not in seen.headers
    assert seen.body == {"model": "up-model", "input": "Hi"}
    assert response.output_text == "Hello from the Responses API."


async def test_every_path_and_the_usage_of_a_passthrough_stream(gateway, fake_responses):
    gw = await gateway({"providers": [responses_provider(fake_responses)]})
    for base in ("/openai/v1", "/v1", ""):
        async with openai.AsyncOpenAI(base_url=gw.url + base, api_key="k", max_retries=0) as sdk:
            async with sdk.responses.stream(model="up-model", input="Hi") as stream:
                final = await stream.get_final_response()
        assert final.id.startswith("resp_fake")
    records = await gw.records()
    assert [r.endpoint for r in records] == ["responses"] * 3
    assert all((r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens, r.tokens_estimated)
               == (36, 17, 4, 6, False) for r in records)
    assert records[0].model_served == "up-model-2025-04-14"


async def test_a_body_over_the_limit_is_a_413_in_openai_shape_with_a_record(gateway):
    gw = await gateway({"providers": [{"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt"],
                                       "isHosted": True}], "limits": {"maxBodyBytes": 2048}})
    async with gw.post("/openai/v1/responses", json={"model": "mock-gpt", "input": "x" * 4096}) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    records = await gw.records()
    assert [(r.endpoint, r.error_type) for r in records] == [("responses", "request_too_large")]
