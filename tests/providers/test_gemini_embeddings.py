"""Gemini embeddings (batchEmbedContents): the request built, the fields refused, the answer read."""

from __future__ import annotations

import base64
import struct

import msgspec
import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers.base import Target, Usage
from tests.fakes.replay import all_cassettes, body_bytes, chat_request, load

ADAPTER = providers.adapter("GEMINI")
KEY = "AIzaSy-secret-gemini-key"
TARGET = Target("gemini", None, KEY)
CASSETTE = {c["name"]: c for c in map(load, all_cassettes())}


# -- embeddings: batchEmbedContents ------------------------------------------------------------
def embed_upstream(target: Target = TARGET, model: str = "gemini-embedding-001", **fields):
    return ADAPTER.build_request(target, parse(orjson.dumps({"model": model, **fields}), "embeddings"))


def test_embeddings_are_one_batch_embed_contents_call_with_one_request_per_input():
    upstream = embed_upstream(input=["a", "b"], dimensions=8, encoding_format="base64", user="u", tags=["a:b"])
    assert upstream.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert upstream.headers["x-goog-api-key"] == KEY and KEY not in upstream.url and not upstream.stream
    assert orjson.loads(upstream.body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": text}]}, "outputDimensionality": 8}
        for text in ("a", "b")]}
    single = orjson.loads(embed_upstream(input="just one").body)
    assert single == {"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "just one"}]}}]}
    assert embed_upstream(model="a/../b", input="x").url.endswith("/models/a%2F..%2Fb:batchEmbedContents")


@pytest.mark.parametrize("fields, param", [
    ({"input": [1, 2, 3]}, "input"), ({"input": [[1, 2], [3]]}, "input"), ({"input": ["a", 1]}, "input"),
    ({"input": []}, "input"), ({"input": None}, "input"), ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": "a", "encoding_format": "binary"}, "encoding_format"), ({"input": "a", "stream": True}, "stream"),
])
def test_embeddings_that_cannot_be_translated_are_a_400_naming_the_field(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        embed_upstream(**fields)
    assert caught.value.status == 400 and caught.value.param == param


def test_vectors_come_back_in_input_order_with_usage_estimated_from_the_input_text():
    cassette = CASSETTE["gemini/embeddings"]
    parsed = ADAPTER.parse_response(chat_request(cassette), body_bytes(cassette))
    answer = orjson.loads(parsed.body)
    expected = cassette["expect"]["embeddings"]
    assert answer == {"object": "list", "model": "gemini-embedding-001",
                      "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(expected)],
                      "usage": {"prompt_tokens": 10, "total_tokens": 10}}  # 42 bytes of input text / 4
    assert parsed.usage == Usage(prompt_tokens=10, total_tokens=10, estimated=True) and parsed.model is None


def test_base64_is_little_endian_float32_as_openai_sends_it():
    cassette = CASSETTE["gemini/embeddings"]
    request = parse(orjson.dumps({"model": "m", **cassette["openai"], "encoding_format": "base64"}), "embeddings")
    data = orjson.loads(ADAPTER.parse_response(request, body_bytes(cassette)).body)["data"]
    assert [base64.b64decode(d["embedding"]) for d in data] == [
        struct.pack("<4f", *vector) for vector in cassette["expect"]["embeddings"]]


@pytest.mark.parametrize("body", [b'{"embeddings": [{"values": [0.1]}]}', b'{"embeddings": [{"values": "x"}]}', b"{}"])
def test_an_answer_that_does_not_match_the_inputs_is_unreadable(body):
    with pytest.raises((ValueError, msgspec.ValidationError)):  # the gateway answers 502 upstream_bad_response
        ADAPTER.parse_response(chat_request(CASSETTE["gemini/embeddings"]), body)

