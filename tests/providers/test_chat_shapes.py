"""OpenAI's chat shapes for the translating adapters: reading requests, writing answers and chunks."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers import chat_shapes as chat
from proxy.providers.base import UpstreamFailure, Usage


def params(**fields) -> chat.ChatParams:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return chat.read_params(parse(orjson.dumps(body)), multiple_choices=True)


def test_a_shape_the_translation_cannot_carry_is_a_400_naming_where():
    with pytest.raises(InvalidRequest) as caught:
        params(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}])
    assert "$.messages[0].content[0]" in caught.value.message


def test_convenience_views():
    assert params(stop="x").stops == ["x"] and params().stops == []
    assert params(max_tokens=3, max_completion_tokens=4).output_limit == 4
    assert params(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}).json_mode
    assert not params(response_format={"type": "text"}).json_mode
    assert chat.present(msgspec.Raw(b"null")) is None and chat.present(msgspec.Raw(b"{}")) == msgspec.Raw(b"{}")


@pytest.mark.parametrize("url, source", [
    ("https://x.example/a.png", ("url", "", "https://x.example/a.png")),
    ("data:image/webp;base64,AAAA", ("base64", "image/webp", "AAAA")),
    ("data:image/png;name=a.png;base64,QQ==", ("base64", "image/png", "QQ==")),
])
def test_image_sources(url, source):
    assert chat.image_source(chat.ImagePart(chat.ImageURL(url)), 0) == source


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:image/png,raw", "data:;base64,AA", "//x/y.png"])
def test_other_image_urls_are_refused(url):
    with pytest.raises(InvalidRequest):
        chat.image_source(chat.ImagePart(chat.ImageURL(url)), 0)


def test_extra_content_a_client_echoes_back_is_read_defensively():
    call = msgspec.convert({"id": "1", "function": {"name": "f"}, "extra_content": {"google": {"thought_signature": "s"}}},
                           chat.ToolCall)
    assert call.extra("google", "thought_signature") == "s" and call.extra("other", "x") is None
    odd = msgspec.convert({"id": "1", "function": {"name": "f"}, "extra_content": {"google": "s"}}, chat.ToolCall)
    assert odd.extra("google", "thought_signature") is None
    assert chat.tool_call("1", "f", "{}", {"google": {"thought_signature": "s"}})["extra_content"] == {
        "google": {"thought_signature": "s"}}


def test_tool_arguments_must_be_an_object():
    call = chat.ToolCall("1", chat.Function("f", ' {"a": 1} '))
    assert chat.arguments(call, 0) == {"a": 1}
    assert chat.arguments(chat.ToolCall("1", chat.Function("f", "")), 0) == {}
    with pytest.raises(InvalidRequest):
        chat.arguments(chat.ToolCall("1", chat.Function("f", "{oops")), 0)


def test_a_completion_is_openai_shaped():
    usage = Usage(3, 4, 7, cached_tokens=1, reasoning_tokens=2)
    body = orjson.loads(chat.completion("id-1", "m", [chat.choice(0, "", [chat.tool_call("c", "f", "{}")],
                                                                  "tool_calls")], usage))
    assert body["object"] == "chat.completion" and body["id"] == "id-1"
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 1},
                             "completion_tokens_details": {"reasoning_tokens": 2}}


def _data(event: bytes) -> dict:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return orjson.loads(event[6:])


def test_chunks_share_id_and_model_and_tool_deltas_are_indexed():
    writer = chat.ChunkWriter("id-1", "m")
    first = _data(writer.tool(0, "", chat.tool_call("call_1", "f", "")))
    later = _data(writer.tool(0, '{"a"'))
    assert first["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]
    assert later["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": '{"a"'}}]
    usage = _data(writer.usage(Usage(1, 2, 3)))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3
    assert {first["id"], later["id"], usage["id"]} == {"id-1"}
    assert _data(writer.finish("stop", 1))["choices"][0] == {"index": 1, "delta": {}, "logprobs": None,
                                                            "finish_reason": "stop"}


def test_an_error_event_is_openai_shaped():
    failure = UpstreamFailure(status=529, message="Overloaded", kind="server", code="overloaded_error",
                              type="overloaded_error")
    assert _data(chat.error_event(failure)) == {"error": {"message": "Overloaded", "type": "overloaded_error",
                                                          "param": None, "code": "overloaded_error"}}
