"""Reading a Responses API answer and its events off the wire (a passthrough's usage, model, end
and failures), and the OpenAI and Azure adapters sending a `responses` dialect request as it came."""

from __future__ import annotations

import msgspec
import orjson

from proxy import providers
from proxy.dialects.responses import DIALECT
from proxy.providers.base import Target
from proxy.providers.openai_responses import NativeParser, parse
from tests.fakes.openai_responses import FakeResponses, call, text

USAGE = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 17,
         "output_tokens_details": {"reasoning_tokens": 6}, "total_tokens": 53}


def frames(items) -> list[bytes]:
    fake = FakeResponses()
    return fake.frames("resp_1", {"model": "m", "stream": True}, items)


def test_usage_and_model_of_an_answer_body():
    usage, model = parse(orjson.dumps({"id": "resp_1", "model": "gpt-x", "usage": USAGE, "output": []}))
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == (36, 17, 53, 4, 6)
    assert model == "gpt-x"
    assert parse(b'{"id": "resp_1", "output": []}') == (None, None)


def test_events_are_relayed_untouched_and_read():
    parser = NativeParser()
    items = [text("Hello there"), call("c1", "f", ['{"a"', ": 1}"])]
    data = b"".join(frames(items))
    out = b"".join(parser.feed(data[i:i + 13]) for i in range(0, len(data), 13)) + parser.close()
    assert out == data
    assert parser.done and parser.finished and parser.error is None
    assert parser.content_events == sum(len(item["pieces"]) for item in items)  # the text and argument deltas
    assert parser.model == "m-2025-04-14"
    assert parser.usage.prompt_tokens == 36 and parser.usage.reasoning_tokens == 6


def test_events_without_an_event_line_are_read_from_their_data():
    parser = NativeParser()
    for frame in frames([text("Hi")]):
        parser.feed(frame.split(b"\n", 1)[1])  # only the data line
    assert parser.done and parser.usage.completion_tokens == 17 and parser.content_events == 2  # "H", "i"


def test_failures():
    parser = NativeParser()
    parser.feed(b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"slow","sequence_number":0}\n\n')
    assert parser.error.status == 429 and parser.error.code == "rate_limit_exceeded" and not parser.done
    failed = NativeParser()
    failed.feed(b'event: response.failed\ndata: {"type":"response.failed","sequence_number":3,"response":'
                b'{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"boom"}}}\n\n')
    assert failed.error.status == 500 and failed.error.message == "boom" and failed.done


def _native_request():
    request, _ = DIALECT.request(orjson.dumps({"model": "asked", "input": "Hi", "store": False,
                                               "tools": [{"type": "web_search"}], "stream": True}), {})
    request.model = "served"
    return request


def test_openai_sends_the_body_as_it_came_to_responses():
    adapter = providers.adapter("OPENAI")
    sent = adapter.build_request(Target(name="p", url="https://api.example/v1", api_key="sk-1"), _native_request())
    assert sent.url == "https://api.example/v1/responses" and sent.stream
    assert msgspec.json.decode(sent.body) == {"model": "served", "input": "Hi", "store": False,
                                              "tools": [{"type": "web_search"}], "stream": True}
    assert sent.headers["Authorization"] == "Bearer sk-1"
    assert isinstance(adapter.stream_parser(_native_request()), NativeParser)


def test_only_openai_and_azure_declare_the_responses_dialect():
    speaking = {name for name in providers.names() if "responses" in providers.adapter(name).caps.dialects}
    assert speaking == {"OPENAI", "AZURE"}


def test_azure_responses_urls():
    adapter = providers.adapter("AZURE")
    base = "https://res.openai.azure.com"
    assert adapter.responses_url(Target(name="p", url=base, api_key=None, api_version="2024-10-21")) == base + "/openai/v1/responses"
    assert adapter.responses_url(Target(name="p", url=base, api_key=None, api_version="2025-04-01-preview")) == (
        base + "/openai/responses?api-version=2025-04-01-preview")
    assert adapter.build_request(Target(name="p", url=base, api_key="k", api_version="preview"),
                                 _native_request()).url == base + "/openai/v1/responses"
