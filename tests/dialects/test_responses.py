"""The Responses dialect's request mapping (Responses → chat) and answer mapping (chat → Responses)."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from proxy.dialects.responses import DIALECT, DROPPING
from proxy.errors import InvalidRequest

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}


def translate(body: dict, dialect=DIALECT):
    request, context = dialect.request(orjson.dumps({"model": "m", **body}), {})
    return orjson.loads(msgspec.json.encode(request.fields)), request, context


def test_a_string_input_and_instructions():
    chat, request, context = translate({"input": "Hi", "instructions": "Be brief"})
    assert chat["messages"] == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
    assert request.model == "m" and not request.stream and context.refusal is None
    assert request.native.dialect == "responses"
    assert orjson.loads(bytes(request.native.fields["input"])) == "Hi"  # the body as it came, for a passthrough


def test_items_map_to_chat_messages():
    items = [
        {"role": "developer", "content": "Rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Look"},
                                                        {"type": "input_image", "image_url": "https://x/i.png",
                                                         "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "custom_tool_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "done"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"role": "user", "content": "Thanks"},
    ]
    chat, _, context = translate({"input": items})
    assert context.refusal is None
    assert chat["messages"] == [
        {"role": "system", "content": "Rules"},
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "apply_patch",
                                                              "arguments": '{"input":"*** Begin"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "done"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
        {"role": "user", "content": "Thanks"}]


def test_tools_function_custom_and_namespace():
    tools = [WEATHER,
             {"type": "custom", "name": "apply_patch", "description": "Edit files",
              "format": {"type": "grammar", "syntax": "lark", "definition": "start: 'x'"}},
             {"type": "namespace", "name": "mcp__fs__", "description": "Files",
              "tools": [{"type": "function", "name": "read", "parameters": {"type": "object"}}]},
             {"type": "namespace", "name": "clock", "description": "Time",
              "tools": [{"type": "function", "name": "sleep"}]}]
    chat, _, context = translate({"input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"},
                                  "parallel_tool_calls": False})
    functions = {tool["function"]["name"]: tool["function"] for tool in chat["tools"]}
    assert list(functions) == ["get_weather", "apply_patch", "mcp__fs__read", "clock__sleep"]
    assert functions["get_weather"] == {"name": "get_weather", "parameters": WEATHER["parameters"], "strict": True,
                                        "description": "The weather"}
    custom = functions["apply_patch"]
    assert custom["parameters"]["properties"] == {"input": {"type": "string"}}
    assert "lark" in custom["description"] and "start: 'x'" in custom["description"]
    assert functions["clock__sleep"]["parameters"] == {"type": "object", "properties": {}}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert context.names["mcp__fs__read"] == ("mcp__fs__", "read", "function")
    assert context.names["apply_patch"] == (None, "apply_patch", "custom")


def test_a_namespaced_call_in_the_input_uses_the_flat_name():
    items = [{"type": "function_call", "call_id": "c", "name": "read", "namespace": "mcp__fs__", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c", "output": "text"}]
    chat, _, _ = translate({"input": items})
    assert chat["messages"][0]["tool_calls"][0]["function"]["name"] == "mcp__fs__read"


def test_parameters():
    body = {"input": "x", "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "Answer", "strict": True,
                                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
            "store": False, "include": ["reasoning.encrypted_content"], "truncation": "auto", "service_tier": "auto",
            "prompt_cache_key": "k", "client_metadata": {"x": "y"}, "metadata": {"a": "b"}, "user": "u",
            "stream": True}
    chat, request, context = translate(body)
    assert {k: v for k, v in chat.items() if k != "messages"} == {
        "model": "m", "max_completion_tokens": 50, "reasoning_effort": "low", "temperature": 0.2, "top_p": 0.9,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "Answer", "schema": body["text"]["format"]["schema"], "strict": True}},
        "stream": True, "stream_options": {"include_usage": True}}
    assert context.reasoning and request.stream and request.wants_usage
    chat, _, _ = translate({"input": "x", "max_output_tokens": 7, "text": {"format": {"type": "json_object"}}})
    assert chat["max_tokens"] == 7 and chat["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}, "input[0].content[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1]"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0]"),
    ({"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function", "name": "bad name!"}]}]},
     "tools[0].tools[0]"),
])
def test_what_a_translation_cannot_carry_is_a_refusal_naming_param(extra, param):
    _, _, context = translate({"input": "x", **extra})
    assert isinstance(context.refusal, InvalidRequest) and context.refusal.param == param


def test_background_false_is_fine():
    assert translate({"input": "x", "background": False})[2].refusal is None


def test_hosted_tools_dropped_when_configured_are_tagged():
    tools = [{"type": "web_search"}, WEATHER, {"type": "code_interpreter", "container": {"type": "auto"}},
             {"type": "web_search"}]
    chat, request, context = translate({"input": "x", "tools": tools, "tool_choice": {"type": "web_search"}}, DROPPING)
    assert context.refusal is None
    assert [tool["function"]["name"] for tool in chat["tools"]] == ["get_weather"]
    assert "tool_choice" not in chat
    assert request.tags == ["dropped_tools:web_search", "dropped_tools:code_interpreter"]
    assert len(msgspec.json.decode(request.native.fields["tools"])) == 4  # a passthrough keeps them


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 5}, "input"),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": 3}]}, "input[0].output"),
])
def test_bad_bodies_are_400s_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as caught:
        DIALECT.request(orjson.dumps(body), {})
    assert caught.value.param == param


def test_not_json_is_a_400():
    with pytest.raises(InvalidRequest):
        DIALECT.request(b"{nope", {})


def answer(message: dict, finish: str = "stop", names: dict | None = None, usage: dict | None = None) -> dict:
    _, _, context = translate({"input": "x", "tools": [WEATHER], "instructions": "Hi"})
    context.names.update(names or {})
    completion = {"id": "chatcmpl-1", "model": "up-model", "choices": [{"index": 0, "message": message,
                                                                        "finish_reason": finish}],
                  "usage": usage or {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                                     "prompt_tokens_details": {"cached_tokens": 5},
                                     "completion_tokens_details": {"reasoning_tokens": 1}}}
    return orjson.loads(DIALECT.answer(orjson.dumps(completion), context)), context


def test_the_answer_object():
    out, context = answer({"role": "assistant", "content": "Hello"})
    assert out["id"] == context.id and out["id"].startswith("resp_") and out["object"] == "response"
    assert out["status"] == "completed" and out["incomplete_details"] is None and out["error"] is None
    assert out["model"] == "up-model" and out["instructions"] == "Hi" and out["tools"] == [WEATHER]
    assert out["output"] == [{"id": out["output"][0]["id"], "type": "message", "status": "completed",
                              "role": "assistant", "content": [{"type": "output_text", "annotations": [],
                                                                "logprobs": [], "text": "Hello"}]}]
    assert out["output"][0]["id"].startswith("msg_")
    assert out["usage"] == {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 4,
                            "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13}


def test_tool_calls_map_back_to_their_items():
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
             {"id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"P"}'}},
             {"id": "call_c", "type": "function", "function": {"name": "ns__read", "arguments": "{}"}}]
    out, _ = answer({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls",
                    {"apply_patch": (None, "apply_patch", "custom"), "ns__read": ("ns", "read", "function")})
    a, b, c = out["output"]
    assert (a["type"], a["call_id"], a["name"], a["arguments"]) == ("function_call", "call_a", "get_weather",
                                                                    '{"city":"Rome"}')
    assert a["id"].startswith("fc_") and "namespace" not in a
    assert (b["type"], b["call_id"], b["name"], b["input"]) == ("custom_tool_call", "call_b", "apply_patch", "P")
    assert (c["name"], c["namespace"]) == ("read", "ns")


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete(finish, reason):
    out, _ = answer({"role": "assistant", "content": "Hal"}, finish)
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": reason}
    assert out["output"][0]["status"] == "incomplete"


def test_a_refusal_is_a_refusal_part():
    out, _ = answer({"role": "assistant", "content": None, "refusal": "No."})
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
