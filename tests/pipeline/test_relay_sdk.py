"""The OpenAI-wire relay seen by the official `openai` SDK: however the provider's bytes are cut
into writes, the caller gets the provider's events byte for byte (less the usage chunk the
gateway asked for on its behalf), and the record holds the provider's usage, or an estimate
marked as one when the stream was cut short."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest
from aiohttp import web

from tests.conftest import PROVIDER_KEY

MODEL = "gpt-4o-mini"


def chunk(i: int, content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"role": "assistant", "content": ""} if i == 0 else {} if content is None else {"content": content}
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-relay", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
        "system_fingerprint": "fp_relay", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                      "finish_reason": finish}]}) + b"\n\n"


def usage_chunk(completion: int) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-relay", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
        "system_fingerprint": "fp_relay", "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": completion, "total_tokens": 9 + completion}}) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def stream(words: list[str], usage: bool = True, done: bool = True) -> list[bytes]:
    events = [chunk(0)] + [chunk(i + 1, w) for i, w in enumerate(words)] + [chunk(len(words) + 1, finish="stop")]
    return events + ([usage_chunk(len(words))] if usage else []) + ([DONE] if done else [])


class RawUpstream:
    """An OpenAI-compatible upstream that writes a scripted SSE body: each item one write, with
    a pause after it so the gateway reads it on its own."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.scripts: dict[str, list[bytes]] = {}  # by the request's metadata.writes
        self.pause = 0.002
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)

    async def start(self, aiohttp_server) -> RawUpstream:
        self.server = await aiohttp_server(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}/v1"
        return self

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        writes = body.get("metadata", {}).get("writes")  # a test's own script, else the shared one
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await out.prepare(request)
        for data in (self.scripts[writes] if writes else self.writes):
            await out.write(data)
            await asyncio.sleep(self.pause)
        return out


@pytest.fixture
async def raw_upstream(aiohttp_server) -> RawUpstream:
    return await RawUpstream().start(aiohttp_server)


async def _gateway(gateway, upstream: RawUpstream):
    return await gateway({"providers": [{"name": "raw", "supportedProvider": "OPENAI_COMPATIBLE", "url": upstream.url,
                                         "apiKey": PROVIDER_KEY + "-raw", "models": [MODEL], "isHosted": True}]})


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="caller-key", max_retries=0)


async def _read(client: openai.AsyncOpenAI, **extra) -> tuple[str, str | None, list]:
    """Content, finish reason and the usage of every chunk, as the SDK decoded the stream."""
    content, finish, usages = "", None, []
    async for part in await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, **extra):
        usages.append(part.usage)
        for choice in part.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return content, finish, usages


async def _raw(client: openai.AsyncOpenAI, **extra) -> bytes:
    """The bytes of the stream as they reached the SDK's HTTP client."""
    async with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, **extra) as response:
        return b"".join([part async for part in response.iter_bytes()])


async def _records(gw, count: int):
    for _ in range(200):
        records = await gw.records()
        if len(records) >= count:
            return records
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(records)} records, expected {count}")


async def test_every_split_of_the_stream_reaches_the_sdk_whole_and_the_usage_exact(gateway, raw_upstream):
    """The stream cut in two writes at every byte boundary: the same content, finish and usage
    each time, the usage chunk (asked for by the gateway, not by the caller) never shown."""
    events = stream(["Hel", "lo", "!"])
    raw = b"".join(events)
    raw_upstream.scripts = {str(i): [raw[:i], raw[i:]] for i in range(1, len(raw))}
    gw = await _gateway(gateway, raw_upstream)
    client = sdk(gw)
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            content, finish, usages = await _read(client, metadata={"writes": str(i)})
        assert (content, finish, usages) == ("Hello!", "stop", [None] * 5), i

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1, len(raw)))), 240)
    assert all(body["stream_options"] == {"include_usage": True} for body in raw_upstream.bodies)
    records = await _records(gw, len(raw) - 1)
    assert {(r.status, r.completion_tokens, r.prompt_tokens, r.tokens_estimated) for r in records} == {
        ("completed", 3, 9, False)}


async def test_a_hundred_events_per_write_relay_byte_exact(gateway, raw_upstream):
    words = [f"w{i} " for i in range(300)]
    events = stream(words)
    raw_upstream.writes = [b"".join(events[i:i + 100]) for i in range(0, len(events), 100)]
    gw = await _gateway(gateway, raw_upstream)
    client = sdk(gw)
    assert await _raw(client) == b"".join(events[:-2] + events[-1:])  # all but the usage chunk
    content, finish, usages = await _read(client)
    assert content == "".join(words) and finish == "stop" and set(usages) == {None}
    asked = await _raw(client, stream_options={"include_usage": True})
    assert asked == b"".join(events)  # the caller asked: the usage chunk stays, byte for byte
    content, _, usages = await _read(client, stream_options={"include_usage": True})
    assert usages[-1].completion_tokens == 300 and content == "".join(words)
    records = await _records(gw, 4)
    assert {(r.completion_tokens, r.tokens_estimated) for r in records} == {(300, False)}


async def test_an_abort_mid_stream_is_recorded_as_estimated(gateway, raw_upstream):
    raw_upstream.writes = stream([f"t{i}" for i in range(200)])
    raw_upstream.pause = 0.01
    gw = await _gateway(gateway, raw_upstream)
    client = sdk(gw)
    seen = 0
    response = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                    stream=True)
    async for _ in response:
        seen += 1
        if seen == 12:
            break
    await response.close()
    (record,) = await _records(gw, 1)
    assert record.status == "client_aborted" and record.tokens_estimated
    assert seen - 1 <= record.completion_tokens <= seen + 3  # what was relayed: what the caller read, give or take a write


async def test_an_error_event_mid_stream_reaches_the_sdk_as_an_error(gateway, raw_upstream):
    error = (b'data: {"error":{"message":"The server had an error while processing your request.",'
             b'"type":"server_error","param":null,"code":null}}\n\n')
    raw_upstream.writes = [b"".join(stream(["a", "b"])[:3]) + error]
    gw = await _gateway(gateway, raw_upstream)
    client = sdk(gw)
    seen = ""
    with pytest.raises(openai.APIError, match="The server had an error"):
        async for part in await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
            seen += part.choices[0].delta.content or ""
    assert seen == "ab"  # what came before the error was relayed first
    raw = await _raw(client)
    assert raw.startswith(b"".join(stream(["a", "b"])[:3]) + error) and b"[DONE]" not in raw
    # The raw read waits for the end: the stream broke off after the error. The SDK gave up at the
    # error and closed its connection, maybe before the provider closed: then it is the one gone.
    outcomes = {(r.status, r.tokens_estimated) for r in await _records(gw, 2)}
    assert ("upstream_truncated", True) in outcomes
    assert outcomes <= {("upstream_truncated", True), ("client_aborted", True)}


async def test_a_provider_that_never_sends_done(gateway, raw_upstream):
    """Finished but no [DONE]: complete, and the SDK ends cleanly. Neither finished nor [DONE]:
    the gateway ends the stream with an error event, which the SDK raises."""
    raw_upstream.scripts = {"finished": stream(["x", "y"], done=False), "cut": stream(["x", "y"], done=False)[:3]}
    gw = await _gateway(gateway, raw_upstream)
    client = sdk(gw)
    content, finish, _ = await _read(client, metadata={"writes": "finished"})
    assert (content, finish) == ("xy", "stop")
    with pytest.raises(openai.APIError, match="ended before it was complete"):
        await _read(client, metadata={"writes": "cut"})
    records = sorted(await _records(gw, 2), key=lambda r: r.status)
    # Cut short, no usage came: the estimate counts the events relayed (the role chunk with them).
    assert [(r.status, r.completion_tokens, r.tokens_estimated) for r in records] == [
        ("completed", 2, False), ("upstream_truncated", 3, True)]
