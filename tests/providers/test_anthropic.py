"""The Anthropic adapter, sans-IO: request translation, answers, stream events, errors.

The wire-level contract (cassettes through a real gateway) is in test_contract.py; these cases
pin the translation rules one by one and feed every stream cassette at every byte boundary.
"""

from __future__ import annotations

import msgspec
import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers import anthropic
from proxy.providers.base import Target
from proxy.providers.chat_shapes import Message
from tests.fakes.replay import all_cassettes, body_bytes, chat_request, load, translate_stream

ADAPTER = providers.adapter("ANTHROPIC")
TARGET = Target("claude", None, "sk-ant-key-0001")
STREAMS = [c for c in map(load, all_cassettes()) if c["provider"] == "ANTHROPIC" and c["response"].get("stream")]
USER = {"role": "user", "content": "Hi"}


def body_for(**fields) -> dict:
    request = parse(orjson.dumps({"model": "claude-x", "messages": [USER], **fields}))
    return orjson.loads(ADAPTER.build_request(TARGET, request).body)


def refused(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        body_for(**fields)
    assert caught.value.status == 400
    return caught.value


def test_the_request_goes_to_messages_with_the_key_and_version_headers():
    request = parse(orjson.dumps({"model": "claude-x", "messages": [USER], "stream": True}))
    upstream = ADAPTER.build_request(TARGET, request)
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers["x-api-key"] == "sk-ant-key-0001"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in upstream.headers and upstream.stream
    assert orjson.loads(upstream.body)["stream"] is True


def test_a_bare_host_gets_v1_and_extra_headers_may_pin_another_version():
    target = Target("claude", "https://proxy.example/", "k", headers={"anthropic-version": "2024-01-01",
                                                                      "anthropic-beta": "x"})
    upstream = ADAPTER.build_request(target, parse(orjson.dumps({"model": "m", "messages": [USER]})))
    assert upstream.url == "https://proxy.example/v1/messages"
    assert upstream.headers["anthropic-version"] == "2024-01-01" and upstream.headers["anthropic-beta"] == "x"


def test_max_tokens_defaults_to_4096_and_max_completion_tokens_wins():
    assert body_for()["max_tokens"] == 4096
    assert body_for(max_tokens=10)["max_tokens"] == 10
    assert body_for(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20


def test_stop_as_a_string_is_a_one_item_list_and_dropped_params_do_not_leak():
    body = body_for(stop="END", seed=1, presence_penalty=1.0, logit_bias={"1": 2}, tags=["team:a"])
    assert body["stop_sequences"] == ["END"]
    assert not {"seed", "presence_penalty", "logit_bias", "tags", "stop"} & set(body)


def test_messages_merge_by_role_and_systems_join():
    messages = [{"role": "system", "content": "A"}, {"role": "user", "content": "1"},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "user", "content": "2"}, {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "3"}, {"role": "tool", "tool_call_id": "t1", "content": "4"},
                {"role": "user", "content": "5"}]
    system, turns = anthropic.to_anthropic_messages(msgspec.convert(messages, list[Message]))
    assert system == "A\n\nB"
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"] == [{"type": "text", "text": "1"}, {"type": "text", "text": "2"}]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": "4"},
                                   {"type": "text", "text": "5"}]


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice(choice, parallel, expected):
    fields = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    body = body_for(**fields)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert body.get("tool_choice") == expected


def test_json_object_mode_is_a_forced_tool_taking_any_object():
    body = body_for(response_format={"type": "json_object"})
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert body_for(response_format={"type": "text"}).get("tools") is None


@pytest.mark.parametrize("fields, param", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
    ({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "response_format"),
])
def test_what_cannot_be_honoured_is_refused(fields, param):
    assert refused(**fields).param == param


@pytest.mark.parametrize("message", [
    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]},
    {"role": "function", "name": "f", "content": "x"},
    {"role": "tool", "content": "x"},
    {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                          "function": {"name": "f", "arguments": "[1, 2]"}}]},
    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
])
def test_messages_it_cannot_translate_are_a_400(message):
    with pytest.raises(InvalidRequest):
        body_for(messages=[USER, message])


def test_embeddings_are_refused():
    request = parse(orjson.dumps({"model": "claude-x", "input": "hi"}), "embeddings")
    with pytest.raises(InvalidRequest):
        ADAPTER.build_request(TARGET, request)


def test_thinking_blocks_are_left_out_of_the_answer_and_cache_counts_in_the_prompt():
    body = orjson.dumps({"id": "msg_1", "model": "claude-x", "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Yes."}],
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 5,
                  "cache_creation_input_tokens": 7}})
    parsed = ADAPTER.parse_response(parse(orjson.dumps({"model": "m", "messages": [USER]})), body)
    answer = orjson.loads(parsed.body)
    assert answer["choices"][0]["message"]["content"] == "Yes."
    assert answer["usage"]["prompt_tokens"] == 15 and answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    assert (parsed.usage.prompt_tokens, parsed.usage.cached_tokens, parsed.usage.total_tokens) == (15, 5, 17)


@pytest.mark.parametrize("reason, finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                            ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_stop_reasons(reason, finish):
    assert anthropic.FINISH[reason] == finish


@pytest.mark.parametrize("status, type_, kind", [
    (529, "overloaded_error", "overloaded"), (500, "api_error", "server"), (429, "rate_limit_error", "rate_limit"),
    (401, "authentication_error", "auth"), (403, "permission_error", "auth"), (402, "billing_error", "auth"),
    (400, "invalid_request_error", "client"), (404, "not_found_error", "not_found"),
    (413, "request_too_large", "client"), (429, "overloaded_error", "overloaded"),
    (504, "timeout_error", "timeout"), (503, "api_error", "overloaded"),
])
def test_errors_are_classified_by_status_and_type(status, type_, kind):
    body = orjson.dumps({"type": "error", "error": {"type": type_, "message": "m"}, "request_id": "req_1"})
    failure = ADAPTER.parse_error(status, {"Retry-After": "4"}, body)
    assert (failure.status, failure.kind, failure.code, failure.message) == (status, kind, type_, "m")
    assert failure.retry_after == 4.0


def test_an_error_body_that_is_not_json_is_described_not_reflected():
    failure = ADAPTER.parse_error(502, {}, b"<html>upstream secret page</html>")
    assert failure.kind == "server" and "secret" not in failure.message
    assert ADAPTER.parse_error(529, {}, b"<html>busy</html>").kind == "overloaded"  # 529 says it alone


@pytest.mark.parametrize("cassette", STREAMS, ids=lambda c: c["name"])
def test_every_byte_boundary_gives_the_same_stream(cassette):
    data = body_bytes(cassette)
    whole, parser = translate_stream(cassette, [data])
    split, _ = translate_stream(cassette, [data[i:i + 1] for i in range(len(data))])
    assert split == whole
    assert parser.events == data.count(b"\ndata: ")
    if cassette["expect"]["status"] == 200 and "stream_error" not in cassette["expect"]:
        assert whole[-1] == "[DONE]" and parser.done and parser.finished and parser.usage is not None
        assert len({e["id"] for e in whole if e != "[DONE]"}) == 1
    else:
        assert "error" in whole[-1] and parser.error is not None and not parser.done


def test_a_first_event_error_is_the_parsers_error_after_one_event():
    cassette = load(next(p for p in all_cassettes() if p.stem == "error_event_stream" and p.parent.name == "anthropic"))
    parser = ADAPTER.stream_parser(chat_request(cassette))
    out = parser.feed(body_bytes(cassette))
    assert parser.events == 1 and parser.error.kind == "overloaded" and parser.error.status == 529
    assert orjson.loads(out[len(b"data: "):])["error"]["code"] == "overloaded_error"


def _frame(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {orjson.dumps(event).decode()}\n\n".encode()


def test_a_cut_stream_is_neither_done_nor_finished_and_reports_no_usage():
    parser = anthropic.StreamParser("claude-x", wants_usage=True, json_mode=False)
    parser.feed(_frame({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                                                             "usage": {"input_tokens": 9, "output_tokens": 1}}}))
    parser.feed(_frame({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    parser.feed(_frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}))
    assert parser.close() == b""
    assert not parser.done and not parser.finished and parser.usage is None and parser.content_events == 1


def test_unknown_events_and_deltas_are_counted_and_skipped():
    parser = anthropic.StreamParser("claude-x", wants_usage=False, json_mode=False)
    out = parser.feed(_frame({"type": "future_event", "x": 1})
                      + _frame({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "thinking_delta", "thinking": "hmm"}})
                      + b"event: ping\ndata: not json\n\n")
    assert out == b"" and parser.events == 3 and parser.invalid == 1 and parser.content_events == 0


# -- passthrough: a caller speaking the Messages API itself ------------------------------------
def native_request(body: dict, headers: dict | None = None, operation: str = ""):
    from proxy.providers.base import Native

    request = parse(orjson.dumps({"model": body["model"], "messages": [USER], "stream": bool(body.get("stream"))}))
    request.native = Native("messages", msgspec.json.decode(orjson.dumps(body), type=dict[str, msgspec.Raw]),
                            headers or {}, operation)
    return request


def test_a_messages_caller_is_sent_as_it_came_with_the_served_model_and_its_version_headers():
    body = {"model": "alias", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}], "top_k": 4, "stream": True}
    request = native_request(body, {"anthropic-version": "2023-06-01", "anthropic-beta": "a,b"})
    request.model = "claude-served"
    upstream = ADAPTER.build_request(TARGET, request)
    assert upstream.url == "https://api.anthropic.com/v1/messages" and upstream.stream
    assert orjson.loads(upstream.body) == {**body, "model": "claude-served"}
    assert upstream.headers["anthropic-beta"] == "a,b" and upstream.headers["x-api-key"] == TARGET.api_key
    counting = native_request({"model": "m", "messages": [USER]}, operation="count_tokens")
    assert ADAPTER.build_request(TARGET, counting).url == "https://api.anthropic.com/v1/messages/count_tokens"


def test_a_messages_answer_is_relayed_untouched_with_its_usage_read():
    body = (b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text",'
            b'"text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_read_input_tokens":4,'
            b'"cache_creation_input_tokens":2,"output_tokens":3}}')
    parsed = ADAPTER.parse_response(native_request({"model": "m", "max_tokens": 1, "messages": [USER]}), body)
    assert parsed.body is body and parsed.model == "claude-x"
    assert (parsed.usage.prompt_tokens, parsed.usage.cached_tokens, parsed.usage.completion_tokens) == (16, 4, 3)
    counted = ADAPTER.parse_response(native_request({"model": "m", "messages": [USER]}, operation="count_tokens"),
                                     b'{"input_tokens":42}')
    assert counted.body == b'{"input_tokens":42}' and counted.usage is None  # a count is not usage


@pytest.mark.parametrize("cassette", [c for c in STREAMS if c["response"]["status"] == 200 and "error" not in c["name"]],
                         ids=lambda c: c["name"])
def test_messages_events_are_relayed_untouched_at_any_read_boundary_with_usage_and_the_end_read(cassette):
    from tests.fakes.replay import rechunk

    raw = body_bytes(cassette)
    translated = ADAPTER.stream_parser(chat_request(cassette))
    translated.feed(raw)
    for seed in range(3):
        parser = ADAPTER.stream_parser(native_request({"model": "m", "max_tokens": 1, "messages": [USER],
                                                       "stream": True}))
        out = b"".join(parser.feed(piece) for piece in rechunk(raw, seed)) + parser.close()
        assert out == raw
        assert parser.done and parser.finished and parser.usage == translated.usage
        assert parser.model == translated.model and parser.error is None and parser.content_events > 0


def test_a_messages_error_event_is_the_native_parsers_error():
    parser = ADAPTER.stream_parser(native_request({"model": "m", "max_tokens": 1, "messages": [USER], "stream": True}))
    frame = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    assert parser.feed(frame) == frame
    assert parser.error.status == 529 and parser.error.kind == "overloaded" and parser.events == 1
