"""The OpenAI adapter: request building, the passthrough parser, error classification."""

from __future__ import annotations

import orjson

from proxy.providers.base import Target
from proxy.providers.openai import Adapter, PassthroughParser
from proxy.request import parse
from tests.fakes.openai import Behaviour, stream_events

TARGET = Target("p", "https://api.example/v1/", "sk-test", None, {"X-Static": "1"})


def test_build_request_keeps_fields_and_asks_for_usage():
    req = parse(b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"tags":["a:b"],"user":"u"}')
    up = Adapter().build_request(TARGET, req)
    assert up.url == "https://api.example/v1/chat/completions"
    assert up.headers["Authorization"] == "Bearer sk-test" and up.headers["X-Static"] == "1"
    body = orjson.loads(up.body)
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "user": "u", "stream_options": {"include_usage": True}}


def test_passthrough_is_byte_exact_and_drops_only_the_unasked_usage_chunk():
    events = stream_events("m", Behaviour(), include_usage=True)
    raw = b"".join(events)
    kept = PassthroughParser(drop_usage_chunk=False)
    assert b"".join(kept.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) == raw
    assert kept.done and kept.finished and kept.usage.completion_tokens == 10 and kept.usage.cached_tokens == 2
    assert kept.usage.reasoning_tokens == 3 and kept.model == "m"
    dropped = PassthroughParser(drop_usage_chunk=True)
    out = dropped.feed(raw)
    assert out == raw.replace(events[-2], b"") and dropped.usage.total_tokens == 22
    assert dropped.content_events == len(Behaviour().content) + 2  # role chunk, content, finish chunk


def test_error_event_and_invalid_json_are_handled():
    parser = PassthroughParser(drop_usage_chunk=True)
    parser.feed(b'data: {"error":{"message":"boom","type":"server_error","code":null}}\n\n')
    assert parser.error.message == "boom" and parser.events == 1
    bad = PassthroughParser(drop_usage_chunk=True)
    assert bad.feed(b'data: {"usage": {oops\n\n') == b'data: {"usage": {oops\n\n'
    assert bad.invalid == 1


def test_parse_error_classifies_by_status_and_summarises_non_json():
    adapter = Adapter()
    f = adapter.parse_error(429, {"Retry-After": "12"}, b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}')
    assert (f.kind, f.retry_after, f.message, f.code) == ("rate_limit", 12.0, "slow down", "rate_limit_exceeded")
    f = adapter.parse_error(502, {}, b"<html>bad gateway</html>")
    assert f.kind == "server" and "<html>" not in f.message
    assert adapter.parse_error(401, {}, b"{}").kind == "auth"
    assert adapter.parse_error(400, {}, b'{"error":"plain string"}').message == "plain string"
    overloaded = (b'{"error":{"message":"The engine is currently overloaded, please try again later.",'
                  b'"type":"server_error","param":null,"code":null}}')
    assert adapter.parse_error(503, {}, overloaded).kind == "overloaded"
    assert adapter.parse_error(504, {}, b"<html>gateway timeout</html>").kind == "timeout"


def test_parse_response_reads_usage_and_model():
    body = b'{"model":"gpt-4o-2024","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    parsed = Adapter().parse_response(None, body)
    assert parsed.body is body and parsed.model == "gpt-4o-2024" and parsed.usage.total_tokens == 7
