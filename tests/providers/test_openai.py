"""The OpenAI adapter: request building, the passthrough parser, error classification."""

from __future__ import annotations

import orjson

from proxy.dialects.completions import parse
from proxy.providers.base import Target
from proxy.providers.openai import Adapter, PassthroughParser
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
    unasked = PassthroughParser(drop_usage_chunk=True)
    unasked.feed(b"".join(stream_events("m", Behaviour(), include_usage=False)))
    assert unasked.content_events == len(Behaviour().content) + 2  # role chunk, content, finish chunk


def test_error_event_and_invalid_json_are_handled():
    parser = PassthroughParser(drop_usage_chunk=True)
    parser.feed(b'data: {"error":{"message":"boom","type":"server_error","code":null}}\n\n')
    assert parser.error.message == "boom" and parser.events == 1
    bad = PassthroughParser(drop_usage_chunk=True)
    assert bad.feed(b'data: {"usage": {oops\n\n') == b'data: {"usage": {oops\n\n'
    assert bad.invalid == 1


def _feed(parser, reads) -> bytes:
    return b"".join(parser.feed(read) for read in reads) + parser.close()


def _state(parser) -> tuple:
    return (parser.events, parser.content_events, parser.done, parser.finished, parser.usage, parser.model)


def test_passthrough_reads_the_same_however_the_stream_is_cut_lf_or_crlf():
    """Per read, not per event: every two-way cut of the stream, in both line endings a provider
    may use, relays the same bytes and reads the same usage, finish and [DONE]; without usage
    (what an abort's estimate counts on) the same counts."""
    for usage in (True, False):
        events = stream_events("m", Behaviour(content=["a", "b"]), include_usage=usage)
        for eol in (b"\n", b"\r\n"):
            cut = [event.replace(b"\n", eol) for event in events]
            raw = b"".join(cut)
            expected = raw.replace(cut[-2], b"") if usage else raw  # the usage-only chunk, not asked for
            for i in range(len(raw) + 1):
                parser = PassthroughParser(drop_usage_chunk=True)
                assert _feed(parser, [raw[:i], raw[i:]]) == expected, i
                assert parser.done and parser.finished and parser.model == "m", i
                if usage:
                    assert parser.usage.completion_tokens == 10, i
                else:
                    assert parser.usage is None and _state(parser)[:2] == (len(events), len(events) - 1), i


def test_passthrough_a_hundred_events_per_read():
    events = stream_events("m", Behaviour(content=[f"w{i} " for i in range(300)]), include_usage=True)
    reads = [b"".join(events[i:i + 100]) for i in range(0, len(events), 100)]
    parser = PassthroughParser(drop_usage_chunk=True)
    assert _feed(parser, reads) == b"".join(events[:-2] + events[-1:])
    assert parser.done and parser.finished and parser.usage.total_tokens == 22
    events = events[:-2] + events[-1:]  # no usage: the content events relayed are the estimate
    reads = [b"".join(events[i:i + 100]) for i in range(0, len(events), 100)]
    parser = PassthroughParser(drop_usage_chunk=True)
    assert _feed(parser, reads) == b"".join(events)
    assert _state(parser)[:4] == (len(events), 302, True, True) and parser.usage is None


def test_passthrough_counts_no_content_once_the_provider_reported_usage():
    """Content events are counted for an abort's estimate. A read that brings the provider's
    usage (a burst: a whole stream in one read) is not counted, nor any read after it; the events
    seen still say the stream has begun."""
    events = stream_events("m", Behaviour(content=["w "] * 97), include_usage=True)
    parser = PassthroughParser(drop_usage_chunk=True)
    parser.feed(b"".join(events))
    assert parser.usage.completion_tokens == 10 and parser.content_events == 1  # the finish chunk, decoded
    assert parser.events == 2 and parser.done  # the finish and usage chunks, decoded
    split = PassthroughParser(drop_usage_chunk=True)
    split.feed(b"".join(events[:50]))
    split.feed(b"".join(events[50:]))
    assert split.content_events == 50 + 1 and split.usage is not None  # the first read counted, exactly


def test_passthrough_python_work_is_per_read(monkeypatch):
    """A read of a hundred events is cut once and only its notable events (the finish and the
    usage chunk) are decoded: no line-by-line decoding, no decode per event."""
    from proxy.providers import openai as wire
    from proxy.streaming import sse

    calls = {"lines": 0, "decoded": 0}
    line_feed, decode = sse.Decoder.feed, wire._chunk.decode

    def counting_feed(self, chunk):
        calls["lines"] += 1
        return line_feed(self, chunk)

    def counting_decode(data):
        calls["decoded"] += 1
        return decode(data)

    monkeypatch.setattr(sse.Decoder, "feed", counting_feed)
    monkeypatch.setattr(wire, "_chunk", type("D", (), {"decode": staticmethod(counting_decode)}))
    events = stream_events("m", Behaviour(content=["w "] * 97), include_usage=True)
    parser = PassthroughParser(drop_usage_chunk=True)
    parser.feed(b"".join(events))
    assert parser.finished and parser.usage is not None
    assert calls == {"lines": 0, "decoded": 2}


def test_passthrough_reads_spaced_json_and_ignores_null_errors():
    """JSON written with `": "` (Python's json.dumps) is read as well; `"error": null` is no error."""
    import json

    def event(obj) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "error": None}
    raw = (event({**base, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]})
           + event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
           + event({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
           + b"data: [DONE]\n\n")
    parser = PassthroughParser(drop_usage_chunk=False)
    assert parser.feed(raw) == raw
    assert parser.finished and parser.done and parser.error is None and parser.usage.total_tokens == 4


def test_passthrough_finds_an_error_event_among_many_and_reads_the_last_usage():
    """Searched from the end of the read: an error after content (then [DONE]) is the parser's
    error; of two usage reports in one read the later, cumulative one counts."""
    events = stream_events("m", Behaviour(content=["a"] * 50), include_usage=False)
    error = b'data: {"error":{"message":"overloaded","type":"server_error","code":"busy"}}\n\n'
    parser = PassthroughParser(drop_usage_chunk=True)
    raw = b"".join(events[:30]) + error + b"data: [DONE]\n\n"
    assert parser.feed(raw) == raw
    assert parser.error.message == "overloaded" and parser.error.code == "busy" and parser.done
    assert parser.content_events == 30 and not parser.finished

    def with_usage(event: bytes, completion: int) -> bytes:
        return event.replace(b'"choices"', b'"usage":{"prompt_tokens":1,"completion_tokens":%d,"total_tokens":%d},"choices"'
                             % (completion, completion + 1), 1)

    counting = PassthroughParser(drop_usage_chunk=True)
    raw = with_usage(events[1], 1) + with_usage(events[2], 2) + events[3]
    assert counting.feed(raw) == raw and counting.usage.completion_tokens == 2


def test_passthrough_takes_streams_framed_otherwise_through_the_full_decoder():
    events = stream_events("m", Behaviour(content=["a"]), include_usage=True)
    raw = b"".join(event.replace(b"\n\n", b"\r\r") for event in events)  # CR alone ends lines too
    parser = PassthroughParser(drop_usage_chunk=True)
    assert _feed(parser, [raw[:50], raw[50:]]) == raw.replace(events[-2].replace(b"\n\n", b"\r\r"), b"")
    assert _state(parser)[:4] == (len(events), len(events) - 2, True, True) and parser.usage.total_tokens == 22


def test_passthrough_counts_what_it_relayed_of_a_cut_stream():
    events = stream_events("m", Behaviour(content=["x"] * 20), include_usage=True)
    parser = PassthroughParser(drop_usage_chunk=True)
    _feed(parser, [b"".join(events[:8]), events[8][:30]])  # the role chunk, 7 content chunks, part of one
    assert parser.content_events == 8 and not parser.done and not parser.finished and parser.usage is None


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
