"""The Messages dialect's request and answer translations, and its error shape."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from proxy.dialects.messages import DIALECT, MessagesContext, decode, to_chat
from proxy.errors import InvalidRequest, NotFound, Unavailable

ASK = [{"role": "user", "content": "Hi"}]


def chat_of(body: dict, headers: dict | None = None) -> tuple[dict, object, object]:
    """(the chat body as the gateway would send it, the request, its context)"""
    request, context = DIALECT.request(orjson.dumps({"model": "m", "max_tokens": 64, **body}), headers or {})
    return orjson.loads(msgspec.json.encode(request.fields)), request, context


def test_system_blocks_join_and_cache_control_top_k_and_unknown_fields_are_left_out():
    chat, request, context = chat_of({
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in French."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
        "top_k": 5, "service_tier": "auto", "some_beta_field": {"x": 1}, "temperature": 0.2, "top_p": 0.9,
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}})
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "You are terse.\n\nAnswer in French."},
                                               {"role": "user", "content": "Hi"}],
                    "max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "user": "u-1"}
    assert context.refusal is None and not context.reasoning
    assert set(request.native.fields) >= {"top_k", "some_beta_field", "system"}  # a passthrough keeps them all


def test_a_system_turn_mid_conversation_is_a_system_message_where_it_stands():
    chat, _, _ = chat_of({"system": "first", "messages": [
        *ASK, {"role": "system", "content": "Agents available: Explore"},
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert chat["messages"] == [{"role": "system", "content": "first"}, {"role": "user", "content": "Hi"},
                                {"role": "system", "content": "Agents available: Explore"},
                                {"role": "system", "content": "a\n\nb"}]


def test_text_and_image_blocks_are_content_parts():
    chat, _, _ = chat_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]}]})
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]}]


def test_tool_use_and_tool_results_placed_before_the_turns_text():
    chat, _, _ = chat_of({"messages": [
        *ASK,
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "…", "signature": "sig"},
                                          {"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                                          {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here:"},
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/p.png"}}]},
            {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True}]}]})
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "one\ntwo"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"},
        {"role": "user", "content": [{"type": "text", "text": "Here:"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}}]}]


TOOL = {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}},
        "cache_control": {"type": "ephemeral"}}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    (None, {}),
])
def test_tools_and_tool_choice(choice, expected):
    chat, _, _ = chat_of({"messages": ASK, "tools": [TOOL], **({"tool_choice": choice} if choice else {})})
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": TOOL["input_schema"],
                                                               "description": "does f"}}]
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


@pytest.mark.parametrize("tools", [[TOOL], []])
def test_an_unknown_tool_choice_type_is_a_400_with_or_without_tools(tools):
    body = {"model": "m", "max_tokens": 10, "messages": ASK, "tools": tools, "tool_choice": {"type": "sometimes"}}
    with pytest.raises(InvalidRequest) as err:
        DIALECT.request(orjson.dumps(body), {}, operation="count_tokens")
    assert err.value.param == "tool_choice.type"


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, "low"), ({"type": "enabled", "budget_tokens": 8000}, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, "high"), ({"type": "disabled"}, None),
    ({"type": "adaptive"}, "medium"), ({"type": "adaptive", "effort": "low"}, "low")])
def test_thinking_becomes_reasoning_effort(thinking, effort):
    config = {"output_config": {"effort": thinking.pop("effort")}} if "effort" in thinking else {}
    chat, _, context = chat_of({"messages": ASK, "thinking": thinking, **config})
    assert chat.get("reasoning_effort") == effort and context.reasoning == (effort is not None)
    assert ("max_completion_tokens" if effort else "max_tokens") in chat  # reasoning models take only the former


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ({"tools": [TOOL, {"type": "code_execution_20250522", "name": "code_execution"}]}, "tools[1]"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, "mcp_servers"),
    ({"container": "container_1"}, "container"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x",
                                                                                 "media_type": "text/plain"}}]}]},
     "messages[0].content[0]"),
])
def test_what_chat_cannot_carry_is_a_refusal_not_an_error(extra, param):
    _, request, context = chat_of({"messages": ASK, **extra})
    assert isinstance(context.refusal, InvalidRequest) and context.refusal.param == param
    assert request.native.dialect == "messages"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "messages": ASK}, "max_tokens"),
    ({"model": "m", "max_tokens": 0, "messages": ASK}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "system": "s", "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "max_tokens": "5", "messages": ASK}, "max_tokens"),
    ({"max_tokens": 5, "messages": ASK}, None),
])
def test_a_body_that_is_not_a_messages_request_is_a_400_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as err:
        DIALECT.request(orjson.dumps(body), {})
    assert err.value.param == param


def test_the_native_request_keeps_the_body_and_only_the_version_headers():
    body = {"model": "m", "max_tokens": 5, "messages": ASK, "top_k": 3}
    request, _ = DIALECT.request(orjson.dumps(body), {"anthropic-version": "2023-06-01", "anthropic-beta": "a,b",
                                                      "x-api-key": "secret", "user-agent": "x"})
    assert {k: orjson.loads(bytes(v)) for k, v in request.native.fields.items()} == body
    assert request.native.headers == {"anthropic-version": "2023-06-01", "anthropic-beta": "a,b"}
    assert request.native.operation == "" and not request.stream
    counted, _ = DIALECT.request(orjson.dumps({"model": "m", "messages": ASK}), {}, operation="count_tokens")
    assert counted.native.operation == "count_tokens"  # no max_tokens needed to count


def test_a_stream_asks_for_usage():
    chat, request, _ = chat_of({"messages": ASK, "stream": True})
    assert chat["stream"] and chat["stream_options"] == {"include_usage": True} and request.wants_usage


def completion(message: dict, finish: str = "stop", usage: dict | None = None) -> bytes:
    return orjson.dumps({"id": "chatcmpl-xyz", "object": "chat.completion", "model": "served",
                         "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                         "usage": usage or {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                                            "prompt_tokens_details": {"cached_tokens": 4}}})


def test_the_answer_is_a_message_with_text_and_tool_use_blocks():
    context = MessagesContext("asked", False)
    body = DIALECT.answer(completion({"role": "assistant", "content": "Sure.", "reasoning_content": "hidden",
                                      "tool_calls": [{"id": "c1", "type": "function", "function": {
                                          "name": "f", "arguments": '{"x": [1, 2]}'}}]}, "tool_calls"), context)
    assert orjson.loads(body) == {
        "id": "msg_xyz", "type": "message", "role": "assistant", "model": "served",
        "content": [{"type": "text", "text": "Sure."}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": [1, 2]}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 16, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 5}}


@pytest.mark.parametrize(("finish", "calls", "reason"), [
    ("stop", False, "end_turn"), ("length", False, "max_tokens"), ("content_filter", False, "refusal"),
    ("stop", True, "tool_use"), ("tool_calls", True, "tool_use")])
def test_answer_stop_reasons(finish, calls, reason):
    message = {"role": "assistant", "content": "x"}
    if calls:
        message["tool_calls"] = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    answer = orjson.loads(DIALECT.answer(completion(message, finish), MessagesContext("m", False)))
    assert answer["stop_reason"] == reason


def test_thinking_in_the_answer_only_when_asked_and_arguments_that_are_not_an_object_are_kept():
    answer = orjson.loads(DIALECT.answer(completion({"role": "assistant", "content": "", "reasoning_content": "why",
                                                     "tool_calls": [{"id": "c", "type": "function", "function": {
                                                         "name": "f", "arguments": "not json"}}]}),
                                         MessagesContext("m", True)))
    assert answer["content"] == [{"type": "thinking", "thinking": "why", "signature": ""},
                                 {"type": "tool_use", "id": "c", "name": "f", "input": {"arguments": "not json"}}]


@pytest.mark.parametrize(("error", "kind"), [(InvalidRequest("bad"), "invalid_request_error"),
                                             (NotFound("gone"), "not_found_error"),
                                             (Unavailable("busy"), "overloaded_error")])
def test_error_body(error, kind):
    assert orjson.loads(DIALECT.error_body(error)) == {"type": "error", "error": {"type": kind, "message": error.message}}


def test_decode_keeps_unknown_fields_out_of_the_typed_view():
    typed, fields = decode(b'{"model":"m","messages":[],"betas_thing":1}')
    assert typed.model == "m" and "betas_thing" in fields
    with pytest.raises(InvalidRequest):
        to_chat(typed, MessagesContext("m", False))
