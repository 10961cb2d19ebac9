"""One contract over every adapter: recorded wire data in, the same OpenAI answer out.

Every cassette under tests/cassettes/ is replayed by a real aiohttp upstream on loopback
(tests/fakes/replay.py), with its recorded chunk boundaries and again re-cut at random; the
caller is the official `openai` SDK pointed at the gateway. For each cassette: the gateway sends
the recorded request, the SDK decodes the recorded answer into the expected content, tool calls
and finish_reason (or, for `"endpoint": "embeddings"` cassettes, the expected vectors), the usage
record holds exactly the provider-reported numbers (or the gateway's estimate, marked as one),
and errors come out OpenAI-shaped with the right status. MOCK, which has no wire, is held to
the same contract directly. Cases are selected by the capabilities each adapter declares.
"""

from __future__ import annotations

import asyncio
import zlib

import msgspec
import openai
import orjson
import pytest

from proxy import providers
from proxy.streaming.sse import Decoder
from tests.fakes.replay import all_cassettes, body_bytes, load

CASSETTES = [load(path) for path in all_cassettes()]
BY_NAME = {c["name"]: c for c in CASSETTES}


def _cases():
    for cassette in CASSETTES:
        modes = ("recorded", "random") if cassette["openai"].get("stream") else ("recorded",)
        for mode in modes:
            yield pytest.param(cassette["name"], mode, id=f"{cassette['name']}-{mode}")


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller-key", max_retries=0)


def _usage(usage) -> dict | None:
    if usage is None:
        return None
    details, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "cached_tokens": details.cached_tokens if details else 0,
            "reasoning_tokens": completion.reasoning_tokens if completion else 0}


async def ask(client: openai.AsyncOpenAI, cassette: dict) -> tuple[list[dict], dict | None]:
    """The choices and usage as the SDK decoded them, from an answer or a whole stream."""
    request = {"model": cassette["model"], **cassette["openai"]}
    if request.get("stream"):
        return await reassemble(await client.chat.completions.create(**request))
    answer = await client.chat.completions.create(**request)
    choices = [{"index": c.index, "content": c.message.content or "", "finish_reason": c.finish_reason,
                "tool_calls": [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                               for t in c.message.tool_calls or ()]} for c in answer.choices]
    return choices, _usage(answer.usage)


async def reassemble(stream, partial: dict | None = None) -> tuple[list[dict], dict | None]:
    """Accumulate chunks as OpenAI's own clients do: content by choice, tool calls by index."""
    built: dict[int, dict] = {} if partial is None else partial
    usage, ids = None, set()
    async for chunk in stream:
        ids.add(chunk.id)
        usage = chunk.usage or usage
        for c in chunk.choices:
            entry = built.setdefault(c.index, {"index": c.index, "content": "", "finish_reason": None, "calls": {}})
            entry["content"] += c.delta.content or ""
            for t in c.delta.tool_calls or ():
                call = entry["calls"].setdefault(t.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = t.id or call["id"]
                call["name"] = (t.function and t.function.name) or call["name"]
                call["arguments"] += (t.function and t.function.arguments) or ""
            entry["finish_reason"] = c.finish_reason or entry["finish_reason"]
    assert len(ids) == 1, f"one id throughout the stream, got {ids}"
    choices = [{"index": e["index"], "content": e["content"], "finish_reason": e["finish_reason"],
                "tool_calls": [e["calls"][i] for i in sorted(e["calls"])]} for _, e in sorted(built.items())]
    return choices, _usage(usage)


def is_embeddings(cassette: dict) -> bool:
    return cassette.get("endpoint") == "embeddings"


async def embed(client: openai.AsyncOpenAI, cassette: dict) -> tuple[list[list[float]], dict]:
    """The vectors and usage as the SDK decoded them (base64 too, when the cassette leaves the format to it)."""
    answer = await client.embeddings.create(model=cassette["model"], **cassette["openai"])
    assert answer.object == "list" and [d.index for d in answer.data] == list(range(len(answer.data)))
    usage = {"prompt_tokens": answer.usage.prompt_tokens, "total_tokens": answer.usage.total_tokens}
    return [list(d.embedding) for d in answer.data], usage


def expected_vectors(cassette: dict) -> list:
    """Equal to the recorded vectors to float32 precision (what base64 carries)."""
    return [pytest.approx(vector, rel=1e-6) for vector in cassette["expect"]["embeddings"]]


def expected_choices(cassette: dict) -> list[dict]:
    return [{**c, "content": c["content"] or ""} for c in cassette["expect"]["choices"]]


async def the_record(gw):
    """The request's one usage record (a stream's is written once the relay has ended)."""
    for _ in range(100):
        records = await gw.records()
        if records:
            (record,) = records
            return record
        await asyncio.sleep(0.01)
    raise AssertionError("no usage record was written")


def _skip_unless_capable(cassette: dict) -> None:
    caps = providers.adapter(cassette["provider"]).caps
    missing = [need for need in cassette.get("needs", ()) if not getattr(caps, need)]
    if missing:
        pytest.skip(f"{cassette['provider']} does not declare {missing}")


@pytest.mark.parametrize("name, chunking", list(_cases()))
async def test_cassette(gateway, replay, name, chunking):
    cassette = BY_NAME[name]
    _skip_unless_capable(cassette)
    replay.load(cassette, chunking=chunking, seed=zlib.crc32(name.encode()))
    gw = await gateway({"providers": [replay.provider(cassette)]})
    expect = cassette["expect"]
    async with sdk(gw) as client:
        if expect["status"] != 200:
            await _expect_error(client, cassette, expect)
        elif "stream_error" in expect:
            await _expect_stream_error(client, cassette, expect)
        elif is_embeddings(cassette):
            vectors, usage = await embed(client, cassette)
            assert vectors == expected_vectors(cassette) and usage == expect["usage"]
        else:
            choices, usage = await ask(client, cassette)
            assert choices == expected_choices(cassette)
            if cassette["openai"].get("stream_options", {}).get("include_usage") or not cassette["openai"].get("stream"):
                assert usage == expect["usage"]
    assert replay.mismatches == [], replay.mismatches
    assert replay.calls == 1
    record = await the_record(gw)
    if expect["status"] == 200 and "stream_error" not in expect:
        assert record.status == "completed" and record.tokens_estimated == expect.get("tokens_estimated", False)
        got = {f: getattr(record, f) for f in expect["usage"]}
        assert got == expect["usage"]
    else:
        assert record.status != "completed"


async def _expect_error(client, cassette: dict, expect: dict) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await (embed if is_embeddings(cassette) else ask)(client, cassette)
    error = caught.value
    assert error.status_code == expect["status"]
    assert set(error.body) == {"message", "type", "param", "code"} and error.body["message"]
    assert (error.body["type"], error.body["code"]) == (expect["error"]["type"], expect["error"]["code"])
    if "retry_after" in expect:
        assert error.response.headers["retry-after"] == expect["retry_after"]
    assert cassette["apiKey"] not in error.response.text


async def _expect_stream_error(client, cassette: dict, expect: dict) -> None:
    request = {"model": cassette["model"], **cassette["openai"]}
    partial: dict = {}
    with pytest.raises(openai.APIError) as caught:
        await reassemble(await client.chat.completions.create(**request), partial)
    assert caught.value.code == expect["stream_error"]["code"]
    assert partial[0]["content"] == expect["partial"]


def _same_json(a: str | None, b: str | None) -> bool:
    try:
        return orjson.loads(a) == orjson.loads(b)
    except (orjson.JSONDecodeError, TypeError):
        return a == b


@pytest.mark.parametrize("name", sorted(n for n in BY_NAME if n + "_stream" in BY_NAME))
def test_a_stream_and_an_answer_say_the_same(name):
    """Each scenario's non-stream and stream cassettes decode to the same choices (JSON compared as JSON)."""
    answer, stream = BY_NAME[name]["expect"], BY_NAME[name + "_stream"]["expect"]
    assert answer.get("usage") == stream.get("usage")
    for one, other in zip(answer.get("choices", []), stream.get("choices", []), strict=True):
        assert one["finish_reason"] == other["finish_reason"]
        assert _same_json(one["content"] or "", other["content"] or "")
        assert len(one["tool_calls"]) == len(other["tool_calls"])
        for a, b in zip(one["tool_calls"], other["tool_calls"], strict=True):
            assert (a["id"], a["name"]) == (b["id"], b["name"]) and _same_json(a["arguments"], b["arguments"])


# -- streamed tool calls reassemble into exactly the bytes the provider sent ------------------------
class _GeminiCall(msgspec.Struct):
    name: str
    args: msgspec.Raw


class _GeminiPart(msgspec.Struct, rename="camel"):
    function_call: _GeminiCall | None = None


class _GeminiContent(msgspec.Struct):
    parts: list[_GeminiPart] = []


class _GeminiCandidate(msgspec.Struct):
    content: _GeminiContent


class _GeminiEvent(msgspec.Struct):
    candidates: list[_GeminiCandidate] = []


def provider_sent_arguments(cassette: dict) -> list[str]:
    """Tool-call arguments as they are on the wire: Anthropic's input_json_delta pieces joined,
    Gemini's `args` object byte for byte."""
    sent: list[str] = []
    if cassette["provider"] == "BEDROCK":  # eventstream frames: the toolUse input pieces joined, per block
        blocks: dict[int, str] = {}
        for frame in cassette["response"]["frames"]:
            delta = frame.get("body", {}).get("delta", {}).get("toolUse")
            if delta is not None:
                index = frame["body"]["contentBlockIndex"]
                blocks[index] = blocks.get(index, "") + delta["input"]
        return list(blocks.values())
    anthropic_blocks: dict[int, int] = {}
    for block in Decoder().feed(body_bytes(cassette)):
        if cassette["provider"] in ("ANTHROPIC", "VERTEXAIANTHROPIC"):  # Claude on Vertex: Anthropic's events
            event = orjson.loads(block.data)
            if event["type"] == "content_block_start" and event["content_block"]["type"] == "tool_use":
                anthropic_blocks[event["index"]] = len(sent)
                sent.append("")
            elif event["type"] == "content_block_delta" and event["index"] in anthropic_blocks:
                sent[anthropic_blocks[event["index"]]] += event["delta"]["partial_json"]
        else:
            event = msgspec.json.decode(block.data, type=_GeminiEvent)
            sent += [bytes(p.function_call.args).decode() for c in event.candidates for p in c.content.parts
                     if p.function_call is not None]
    return sent


@pytest.mark.parametrize("name", ["anthropic/tools_stream", "gemini/tools_stream", "vertex/tools_stream", "bedrock/tools_stream",
                                  "vertex_anthropic/tools_stream"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_streamed_tool_calls_reassemble_into_the_arguments_sent(gateway, replay, name, seed):
    cassette = BY_NAME[name]
    sent = provider_sent_arguments(cassette)
    assert len(sent) == 2 and all(sent)
    replay.load(cassette, chunking="random", seed=seed)
    gw = await gateway({"providers": [replay.provider(cassette)]})
    async with sdk(gw) as client:
        choices, _ = await ask(client, cassette)
    assert [call["arguments"] for call in choices[0]["tool_calls"]] == sent


# -- MOCK: no wire, the same contract ---------------------------------------------------------------
MOCK = {"name": "mock", "supportedProvider": "MOCK", "models": ["mock-gpt", "mock-gpt-429", "mock-gpt-500"],
        "isHosted": True}


async def _mock_both_ways(gw):
    question = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}
    async with sdk(gw) as client:
        plain = await client.chat.completions.create(**question)
        streamed, stream_usage = await reassemble(await client.chat.completions.create(
            **question, stream=True, stream_options={"include_usage": True}))
    return plain, streamed, stream_usage


async def test_mock_answer_and_stream_finish_alike_and_usage_is_recorded(gateway):
    gw = await gateway({"providers": [MOCK]})
    plain, streamed, stream_usage = await _mock_both_ways(gw)
    assert streamed[0]["content"] == plain.choices[0].message.content
    assert streamed[0]["finish_reason"] == plain.choices[0].finish_reason == "stop"
    assert stream_usage == _usage(plain.usage)
    records = await gw.records()
    assert len(records) == 2
    for record in records:
        assert not record.tokens_estimated
        assert {f: getattr(record, f) for f in stream_usage} == stream_usage


async def test_mock_answer_and_stream_have_the_same_content(gateway):
    gw = await gateway({"providers": [MOCK]})
    plain, streamed, _ = await _mock_both_ways(gw)
    assert streamed[0]["content"] == plain.choices[0].message.content


@pytest.mark.parametrize("model, status, code", [("mock-gpt-429", 429, "upstream_rate_limited"),
                                                 ("mock-gpt-500", 502, "upstream_error")])
async def test_mock_errors_are_openai_shaped(gateway, model, status, code):
    gw = await gateway({"providers": [MOCK]})
    async with sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == status and caught.value.body["code"] == code


def test_every_adapter_in_the_table_is_under_contract():
    covered = {c["provider"] for c in CASSETTES} | {"MOCK"}
    family = {name for name, where in providers.TABLE.items() if where.startswith("proxy.providers.family:")}
    # The OpenAI-wire family are base-URL deltas on the OpenAI adapter, which the openai cassettes hold.
    assert set(providers.TABLE) - family <= covered
