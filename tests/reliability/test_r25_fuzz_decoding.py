"""Fuzzing the request path: raw body → decode → check → upstream request, for every adapter
(RELIABILITY R25). Invalid input is a 400 naming the problem, never a 500 or a RecursionError.

Examples per run: 1,200 structured requests + 600 arbitrary bodies + 300 upstream streams (2,100),
plus the special inputs, the saved corpus and 115 requests over HTTP. The long-running atheris
harness over the same paths is tests/fuzz/fuzz_request.py (not run by CI).
Inputs that once failed live in tests/fuzz/corpus/ and are replayed here on every run.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import openai_provider
from tests.fuzz import targets

CORPUS = pathlib.Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
def _encode(value) -> bytes:
    return json.dumps(value).encode()  # big integers and Infinity too: inputs need not be valid



json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot", ""])
content = st.text(max_size=40) | st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "audio"]), "text": st.text(max_size=10)}), max_size=3) | json_values
message = st.fixed_dictionaries({"role": roles | json_values}, optional={"content": content, "name": json_values,
                                                                        "tool_calls": json_values})
FIELDS = {
    "model": st.text(max_size=30) | json_values,
    "messages": st.lists(message, max_size=3) | json_values,
    "stream": st.booleans() | json_values,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_values}) | json_values,
    "n": st.integers(-3, 5) | json_values,
    "max_tokens": st.integers(-5, 10**6) | json_values,
    "max_completion_tokens": st.integers(-5, 10**6) | json_values,
    "temperature": st.floats(allow_nan=False) | json_values,
    "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": st.text(max_size=10)}, optional={"parameters": json_values})}), max_size=2) | json_values,
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
    "tags": st.lists(st.text(max_size=20), max_size=3) | json_values,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | json_values,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["json_object", "text", "x"])}) | json_values,
    "input": st.text(max_size=20) | st.lists(st.text(max_size=5)) | json_values,
    "logprobs": st.booleans() | json_values,
    "user": st.text(max_size=10) | json_values,
}
requests = st.fixed_dictionaries({"model": st.sampled_from(["m", "gpt-4o-mini"]) | FIELDS["model"],
                                  "messages": st.lists(message, min_size=1, max_size=3) | FIELDS["messages"]},
                                 optional={k: v for k, v in FIELDS.items() if k not in ("model", "messages")})


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests, st.sampled_from(["chat", "embeddings"]))
def test_r25_structured_requests_decode_or_are_a_400(body, kind):
    targets.request_path(_encode(body), kind)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200) | json_values.map(_encode)
       | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_r25_arbitrary_bytes_decode_or_are_a_400(body):
    targets.request_path(body, "chat")


SPECIAL = {
    "invalid_utf8": b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe"}]}',
    "lone_surrogate": b'{"model":"m","messages":[{"role":"user","content":"\\ud800"}]}',
    "lone_surrogate_model": b'{"model":"\\udfff","messages":[{"role":"user","content":"x"}]}',
    "huge_number": b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1e400}',
    "nan": b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":NaN}',
    "duplicate_keys": b'{"model":"m","model":"n","messages":[{"role":"user","content":"x"}]}',
    "stream_string": b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
    "n_string": b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":"2"}',
    "max_tokens_object": b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":{}}',
    "tools_string": b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":"all"}',
    "messages_object": b'{"model":"m","messages":{"role":"user"}}',
    "top_level_array": b'[{"model":"m"}]',
    "empty": b"",
    "nul_model": b'{"model":"m\\u0000","messages":[{"role":"user","content":"x"}]}',
    "crlf_model": b'{"model":"m\\r\\nX-Injected: 1","messages":[{"role":"user","content":"x"}]}',
}


@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_r25_special_inputs(case):
    targets.request_path(SPECIAL[case], "chat")


def test_r25_saved_inputs_are_replayed():
    files = sorted(CORPUS.glob("*"))
    assert files
    for path in files:
        targets.one_input(path.read_bytes())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300), st.integers(0, 300))
def test_r25_stream_parsers_take_any_bytes(data, split):
    targets.stream_path(data, split)


@pytest.mark.parametrize("where", ["messages", "tools", "unknown_field", "top"])
async def test_r25_deep_nesting_is_a_fast_400(gateway, fake_openai, where):
    depth = 100_000
    nested = b"[" * depth + b"]" * depth
    base = b'{"model":"m","messages":[{"role":"user","content":"x"}]'
    body = {"messages": b'{"model":"m","messages":' + nested + b"}",
            "tools": base + b',"tools":' + nested + b"}",
            "unknown_field": base + b',"x":' + nested + b"}",
            "top": nested}[where]
    gw = await gateway({"providers": [openai_provider(fake_openai, models=("m",))]})
    started = time.monotonic()
    async with gw.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
        took = time.monotonic() - started
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert took < 0.1, took
    assert fake_openai.requests == []


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
async def test_r25_through_the_gateway_never_a_5xx(gateway):
    # The in-process model answers whatever the gateway forwards: any 5xx here is the gateway's.
    mock = {"name": "mock", "supportedProvider": "MOCK", "models": ["m", "gpt-4o-mini"], "isHosted": True}
    gw = await gateway({"providers": [mock]})
    bodies = [SPECIAL[case] for case in sorted(SPECIAL)]
    bodies += [_encode(requests.example()) for _ in range(100)]
    for body in bodies:
        async with gw.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status < 500, (resp.status, body[:200], await resp.text())
