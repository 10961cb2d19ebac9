"""The provider contract again, with the caller speaking the Responses API (the `openai` SDK's
`client.responses`).

Every chat cassette's recorded answer (tests/cassettes/) is replayed as in test_contract.py. The
caller's chat request is asked again as a Responses one (messages → input items, tools flattened,
`max_tokens` → `max_output_tokens`, `response_format` → `text.format`); the fake does not compare
it (the chat contract pins each adapter's request). What is held is the answer: the output text
and `function_call` items (call id kept, arguments byte for byte) the cassette expects, `status`
completed, or incomplete with the reason its finish gives, the usage as recorded, the same usage
record as chat (endpoint `responses`), and errors in OpenAI's shape with the status chat gives
them; a failure after the first event is a `response.failed` event.

OpenAI and Azure declare the Responses API themselves, so a request to them is passed through to
their `/responses` and these chat cassettes cannot answer it (that passthrough is held by
tests/routes/test_responses.py against a Responses fake). OpenAI's cassettes are replayed through
OPENAI_COMPATIBLE instead: the same adapter and wire, without a Responses endpoint, so the request
is translated; a passed-through answer (a chat body under a Responses caller) would fail every
check below. Azure's are skipped. Left out: several choices (`n`), which the Responses API cannot
ask; the chat-only parameters (`stop`, `seed`, penalties) are not asked, the answer being the same.
"""

from __future__ import annotations

import zlib

import openai
import pytest

from tests.providers.test_contract import BY_NAME, _skip_unless_capable, the_record

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# A provider whose adapter declares the Responses API serves it as it came: replayed through
# the adapter of the same wire that translates, or skipped.
TRANSLATED_BY = {"OPENAI": "OPENAI_COMPATIBLE"}
PASSTHROUGH = {"AZURE"}


def _chat_cases():
    for name, cassette in sorted(BY_NAME.items()):
        if cassette.get("endpoint") or "candidates" in name:
            continue
        yield pytest.param(name, id=name)


# -- the cassette's chat request, asked in the Responses API -----------------------------------
def _part(piece: dict) -> dict:
    if piece["type"] == "text":
        return {"type": "input_text", "text": piece["text"]}
    image = piece["image_url"]
    return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail", "auto")}


def _input(messages: list[dict]) -> list[dict]:
    items: list[dict] = []
    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"], "output": content})
            continue
        if content:
            items.append({"role": role, "content": [_part(p) for p in content] if isinstance(content, list)
                          else content})
        items += [{"type": "function_call", "call_id": t["id"], "name": t["function"]["name"],
                   "arguments": t["function"]["arguments"]} for t in message.get("tool_calls") or ()]
    return items


def _tool(tool: dict) -> dict:
    function = tool["function"]
    return {"type": "function", "name": function["name"], "parameters": function["parameters"],
            **{k: function[k] for k in ("description", "strict") if k in function}}


def responses_request(cassette: dict) -> dict:
    chat = cassette["openai"]
    request = {"model": cassette["model"], "input": _input(chat["messages"])}
    limit = chat.get("max_completion_tokens", chat.get("max_tokens"))
    if limit is not None:
        request["max_output_tokens"] = limit
    request |= {k: chat[k] for k in ("temperature", "top_p", "user", "parallel_tool_calls") if k in chat}
    if "tools" in chat:
        request["tools"] = [_tool(t) for t in chat["tools"]]
    choice = chat.get("tool_choice")
    if choice is not None:
        request["tool_choice"] = choice if isinstance(choice, str) else {"type": "function",
                                                                         "name": choice["function"]["name"]}
    schema = chat.get("response_format", {}).get("json_schema")
    if schema is not None:
        request["text"] = {"format": {"type": "json_schema", **schema}}
    return request


async def _ask(client: openai.AsyncOpenAI, cassette: dict):
    """The response (the terminal event's for a stream) and, for a stream, the text its deltas carried."""
    request = responses_request(cassette)
    if not cassette["openai"].get("stream"):
        return await client.responses.create(**request), None
    texts, last = [], None
    async with client.responses.stream(**request) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                texts.append(event.delta)
            elif event.type in ("response.completed", "response.incomplete", "response.failed"):
                last = event
        assert last is not None, "the stream ended without a terminal event"
        if last.type == "response.completed":  # the SDK's own accumulation says the same
            final = await stream.get_final_response()
            assert (final.id, final.output_text) == (last.response.id, last.response.output_text)
    return last.response, "".join(texts)


@pytest.mark.parametrize("name", list(_chat_cases()))
async def test_cassette_through_the_responses_api(gateway, replay, name):
    cassette = BY_NAME[name]
    if cassette["provider"] in PASSTHROUGH:
        pytest.skip("passthrough: covered by tests/routes/test_responses.py's Responses fake")
    _skip_unless_capable(cassette)
    replay.load(cassette, chunking="random" if cassette["openai"].get("stream") else "recorded",
                seed=zlib.crc32(name.encode()))
    replay.check = False
    provider = replay.provider(cassette)
    provider["supportedProvider"] = TRANSLATED_BY.get(cassette["provider"], cassette["provider"])
    gw = await gateway({"providers": [provider]})
    expect = cassette["expect"]
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller-key", max_retries=0) as client:
        if expect["status"] != 200:
            with pytest.raises(openai.APIStatusError) as caught:
                await _ask(client, cassette)
            _check_error(caught.value, cassette, expect)
        else:
            check = _check_failed if "stream_error" in expect else _check_response
            check(*await _ask(client, cassette), expect)
    assert replay.calls == 1
    await _check_record(gw, expect)


async def _check_record(gw, expect: dict) -> None:
    """Chat's usage record, marked as the Responses API's; only an answer's is completed."""
    record = await the_record(gw)
    answered = expect["status"] == 200 and "stream_error" not in expect
    assert (record.endpoint, record.status == "completed") == ("responses", answered)
    if answered:
        assert {f: getattr(record, f) for f in expect["usage"]} == expect["usage"]


def _check_response(response, streamed: str | None, expect: dict) -> None:
    choice = expect["choices"][0]
    assert response.id.startswith("resp_") and response.error is None
    texts = [c.text for item in response.output if item.type == "message" for c in item.content
             if c.type == "output_text"]
    calls = [(item.call_id, item.name, item.arguments) for item in response.output if item.type == "function_call"]
    assert "".join(texts) == (choice["content"] or "")
    if streamed is not None:
        assert streamed == (choice["content"] or "")
    assert calls == [(c["id"], c["name"], c["arguments"]) for c in choice["tool_calls"]]
    reason = INCOMPLETE.get(choice["finish_reason"])
    if reason is None:
        assert (response.status, response.incomplete_details) == ("completed", None)
    else:
        assert (response.status, response.incomplete_details.reason) == ("incomplete", reason)
    usage, recorded = response.usage, expect["usage"]
    assert {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "cached_tokens": usage.input_tokens_details.cached_tokens,
            "reasoning_tokens": usage.output_tokens_details.reasoning_tokens} == recorded


def _check_failed(response, streamed: str | None, expect: dict) -> None:
    """A provider failure after the first event: `response.failed`, the text so far delivered."""
    assert streamed == expect["partial"]
    assert response.status == "failed" and response.error.message
    # The recorded mid-stream failures are overloads and internal errors: the API's `server_error`.
    assert response.error.code == "server_error"


def _check_error(error: openai.APIStatusError, cassette: dict, expect: dict) -> None:
    assert error.status_code == expect["status"]
    assert set(error.body) == {"message", "type", "param", "code"} and error.body["message"]
    assert (error.body["type"], error.body["code"]) == (expect["error"]["type"], expect["error"]["code"])
    assert error.request_id and cassette["apiKey"] not in error.response.text
    if "retry_after" in expect:
        assert error.response.headers["retry-after"] == expect["retry_after"]
