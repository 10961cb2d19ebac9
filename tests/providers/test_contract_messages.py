"""The provider contract again, with the caller speaking the Messages API (the `anthropic` SDK).

Every chat cassette's recorded answer (tests/cassettes/) is replayed as in test_contract.py, but
the request is a Messages one, so the fake does not compare it (the chat contract pins each
adapter's request); what is held is the answer: the SDK decodes the text and tool calls the
cassette expects, a stop reason that matches its finish reason, usage whose parts add up to
the recorded prompt, the same usage record as chat, and errors in Anthropic's shape with the
status chat gives them. Anthropic's cassettes are passed through; every other adapter's are
translated (Bedrock's and VERTEXAIANTHROPIC's too: neither declares the `messages` dialect). Cases that a Messages caller cannot ask (JSON mode, several choices) are left out.
"""

from __future__ import annotations

import zlib

import anthropic
import orjson
import pytest

from proxy.dialects.messages_stream import error_type
from tests.providers.test_contract import BY_NAME, _skip_unless_capable, the_record

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
TOOL = {"name": "get_weather", "description": "The weather", "input_schema": {"type": "object", "properties": {}}}


def _chat_cases():
    for name, cassette in sorted(BY_NAME.items()):
        if cassette.get("endpoint") or "json_mode" in name or "candidates" in name:
            continue
        yield pytest.param(name, id=name)


def _native_stop(cassette: dict) -> str | None:
    """The stop reason an Anthropic provider recorded (passed through as it is)."""
    raw = "".join(cassette["response"]["chunks"])
    if not cassette["response"].get("stream"):
        return orjson.loads(raw)["stop_reason"]
    for line in raw.splitlines():
        if line.startswith("data: ") and '"message_delta"' in line:
            return orjson.loads(line[6:])["delta"]["stop_reason"]
    return None


async def _ask(client: anthropic.AsyncAnthropic, cassette: dict):
    request = {"model": cassette["model"], "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    if "tools" in cassette.get("needs", ()):
        request["tools"] = [TOOL]
    if not cassette["openai"].get("stream"):
        return await client.messages.create(**request), None
    texts: list[str] = []
    async with client.messages.stream(**request) as stream:
        try:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    texts.append(event.delta.text)
        except anthropic.APIStatusError as error:
            return error, "".join(texts)
        return await stream.get_final_message(), None


@pytest.mark.parametrize("name", list(_chat_cases()))
async def test_cassette_through_the_messages_api(gateway, replay, name):
    cassette = BY_NAME[name]
    _skip_unless_capable(cassette)
    replay.load(cassette, chunking="random" if cassette["openai"].get("stream") else "recorded",
                seed=zlib.crc32(name.encode()))
    replay.check = False
    gw = await gateway({"providers": [replay.provider(cassette)]})
    expect = cassette["expect"]
    async with anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0) as client:
        if expect["status"] != 200:
            with pytest.raises(anthropic.APIStatusError) as caught:
                await _ask(client, cassette)
            _check_error(caught.value, cassette, expect)
        else:
            answer, partial = await _ask(client, cassette)
            if "stream_error" in expect:
                assert isinstance(answer, anthropic.APIStatusError) and partial == expect["partial"]
            else:
                _check_message(answer, cassette, expect)
    assert replay.calls == 1
    record = await the_record(gw)
    assert record.endpoint == "messages"
    if expect["status"] == 200 and "stream_error" not in expect:
        assert record.status == "completed"
        assert {f: getattr(record, f) for f in expect["usage"]} == expect["usage"]
    else:
        assert record.status != "completed"


def _check_message(message, cassette: dict, expect: dict) -> None:
    choice = expect["choices"][0]
    texts = [block.text for block in message.content if block.type == "text"]
    calls = [(block.id, block.name, block.input) for block in message.content if block.type == "tool_use"]
    assert "".join(texts) == (choice["content"] or "")
    assert calls == [(c["id"], c["name"], orjson.loads(c["arguments"])) for c in choice["tool_calls"]]
    if cassette["provider"] == "ANTHROPIC":
        assert message.stop_reason == _native_stop(cassette)
    else:
        reason = STOP[choice["finish_reason"]]
        assert message.stop_reason == ("tool_use" if calls and reason == "end_turn" else reason)
    usage, recorded = message.usage, expect["usage"]
    parts = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    assert (parts, usage.output_tokens) == (recorded["prompt_tokens"], recorded["completion_tokens"])
    assert (usage.cache_read_input_tokens or 0) == recorded.get("cached_tokens", 0)


def _check_error(error: anthropic.APIStatusError, cassette: dict, expect: dict) -> None:
    assert error.status_code == expect["status"]
    assert error.body["type"] == "error" and error.body["error"]["type"] == error_type(expect["status"])
    assert error.request_id and cassette["apiKey"] not in error.response.text
    if "retry_after" in expect:
        assert error.response.headers["retry-after"] == expect["retry_after"]
