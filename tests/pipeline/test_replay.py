"""A completion in both of OpenAI's shapes: plain → chunks → plain is the identity."""

from __future__ import annotations

import orjson

from proxy.pipeline.replay import assemble, to_chunks, usage_json
from proxy.providers.base import Usage

USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "It is sunny."}, "logprobs": None,
         "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Vilnius"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
         "logprobs": None, "finish_reason": "tool_calls"}],
    "usage": USAGE, "system_fingerprint": "fp_1"}


def events(sse: bytes) -> list:
    return [block[6:] for block in sse.decode().split("\n\n") if block]


def test_round_trip_with_tool_calls_and_two_choices():
    sse = to_chunks(orjson.dumps(COMPLETION), include_usage=True)
    assert events(sse)[-1] == "[DONE]" and '"usage"' in events(sse)[-2]
    assert orjson.loads(assemble(sse, None)) == COMPLETION


def test_usage_chunk_only_when_asked_and_usage_from_the_record_otherwise():
    sse = to_chunks(orjson.dumps({**COMPLETION, "choices": COMPLETION["choices"][:1]}), include_usage=False)
    assert b'"usage"' not in sse
    rebuilt = orjson.loads(assemble(sse, Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)))
    assert rebuilt["usage"] == USAGE == usage_json(Usage(prompt_tokens=5, completion_tokens=7))


def test_split_arguments_and_refusals_are_joined():
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    parts = [{"role": "assistant", "refusal": "I can"}, {"refusal": "not."},
             {"tool_calls": [{"index": 0, "id": "call", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}]},
             {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}]
    sse = b"".join(b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": d}]}) + b"\n\n" for d in parts)
    sse += b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    message = orjson.loads(assemble(sse, None))["choices"][0]["message"]
    assert message["refusal"] == "I cannot." and message["tool_calls"][0]["function"]["arguments"] == '{"a":1}'


def test_incomplete_or_failed_streams_are_not_assembled():
    whole = to_chunks(orjson.dumps(COMPLETION), include_usage=False)
    cut = whole[: whole.index(b'"finish_reason":"stop"')].rsplit(b"\n\n", 1)[0] + b"\n\n"
    assert assemble(cut, None) is None
    assert assemble(b'data: {"error":{"message":"boom"}}\n\n', None) is None
    assert assemble(b"data: not json\n\n", None) is None
    assert assemble(b"", None) is None
