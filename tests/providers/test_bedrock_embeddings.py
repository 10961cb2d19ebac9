"""Bedrock embeddings (sans-IO): Titan and Cohere bodies for InvokeModel, and their answers as
OpenAI's, with usage from Titan's token count or estimated for Cohere."""

from __future__ import annotations

import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers.base import Target

ADAPTER = providers.adapter("BEDROCK")


def _request(model: str, given, **extra):
    return parse(orjson.dumps({"model": model, "input": given, **extra}), "embeddings")


@pytest.mark.parametrize("model, given, param", [
    ("amazon.titan-embed-text-v2:0", ["one", "two"], "input"),  # Titan embeds one text per call
    ("meta.llama3-8b-instruct-v1:0", "x", "model")])
def test_embeddings_bedrock_cannot_make_are_a_400_naming_the_field(model, given, param):
    request = _request(model, given)
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.build_request(Target("b", None, "key", region="us-east-1"), request)
    assert caught.value.param == param


def test_a_cohere_inference_profile_is_cohere_and_its_url_is_invoke():
    request = _request("us.cohere.embed-v4:0", ["a", "b"])
    built = ADAPTER.build_request(Target("b", None, "key", region="us-east-1"), request)
    assert built.url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.cohere.embed-v4%3A0/invoke"
    assert orjson.loads(built.body) == {"texts": ["a", "b"], "input_type": "search_document"}


def test_titan_usage_is_its_token_count_and_cohere_vectors_come_as_a_list_or_by_type():
    titan = ADAPTER.parse_response(_request("amazon.titan-embed-text-v2:0", "a"),
                                   orjson.dumps({"embedding": [0.5, 0.25], "inputTextTokenCount": 9}))
    assert (titan.usage.prompt_tokens, titan.usage.estimated) == (9, False)
    request = _request("cohere.embed-v4:0", ["a", "b"], encoding_format="float")
    for body in ({"embeddings": [[0.5], [0.25]]}, {"embeddings": {"float": [[0.5], [0.25]], "int8": [[1], [2]]}}):
        parsed = ADAPTER.parse_response(request, orjson.dumps(body))
        assert [d["embedding"] for d in orjson.loads(parsed.body)["data"]] == [[0.5], [0.25]]
        assert parsed.usage.estimated
    with pytest.raises(ValueError):  # one vector for two inputs: the gateway's 502, never a misaligned answer
        ADAPTER.parse_response(request, orjson.dumps({"embeddings": [[0.5]]}))
