"""Request decoding: only the fields the gateway reads, the rest forwarded as raw slices."""

from __future__ import annotations

import orjson
import pytest

from proxy.errors import InvalidRequest
from proxy.request import parse


def test_fields_and_body_rewrite():
    raw = b'{"model":"a","messages":[{"role":"user","content":"x"}],"tags":["k:v"],"temperature":0.2,"n":2}'
    req = parse(raw)
    assert (req.model, req.stream, req.wants_usage, req.tags) == ("a", False, False, ["k:v"])
    assert orjson.loads(req.openai_body("b", ask_usage=True)) == {
        "model": "b", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "n": 2}


def test_caller_stream_options_are_kept():
    req = parse(b'{"model":"a","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}')
    assert req.wants_usage
    assert orjson.loads(req.openai_body("a", ask_usage=True))["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("raw", [b'{"model":"a\\r\\nX: y","messages":[{"role":"user"}]}',
                                 b'{"model":"' + b"a" * 300 + b'","messages":[{"role":"user"}]}',
                                 b'{"model":"a","messages":[{"role":"user"}],"tags":"k:v"}',
                                 b'{"model":"a","messages":[{"role":"user"}],"stream_options":1}',
                                 b'{"model":"a","messages":[[[[[]]]]]}'])
def test_rejections(raw):
    with pytest.raises(InvalidRequest):
        parse(raw)


def test_embeddings_need_input():
    assert parse(b'{"model":"e","input":"x"}', "embeddings").kind == "embeddings"
    with pytest.raises(InvalidRequest, match="input"):
        parse(b'{"model":"e"}', "embeddings")
