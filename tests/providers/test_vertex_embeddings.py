"""Vertex embeddings (sans-IO): `:predict` with one instance per input, and Vertex's token counts
as the usage."""

from __future__ import annotations

import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.providers.base import Target

ADAPTER = providers.adapter("VERTEXAIGEMINI")
URL = "https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/locations/us-central1"
TOKEN = "ya29.secret-access-token"


def test_embeddings_go_to_predict_with_one_instance_per_input():
    request = parse(orjson.dumps({"model": "text-embedding-005", "input": ["a", "b"], "dimensions": 256}), "embeddings")
    upstream = ADAPTER.build_request(Target("v", URL, TOKEN), request)
    assert upstream.url == f"{URL}/publishers/google/models/text-embedding-005:predict"
    assert upstream.headers["Authorization"] == f"Bearer {TOKEN}" and not upstream.stream
    assert orjson.loads(upstream.body) == {"instances": [{"content": "a"}, {"content": "b"}],
                                           "parameters": {"outputDimensionality": 256}}


def test_embedding_usage_is_vertexs_token_count_or_else_an_estimate():
    request = parse(orjson.dumps({"model": "text-embedding-005", "input": ["a", "b"]}), "embeddings")
    counted = {"predictions": [{"embeddings": {"statistics": {"token_count": 2.0}, "values": [0.5]}},
                               {"embeddings": {"statistics": {"token_count": 3}, "values": [0.25]}}]}
    parsed = ADAPTER.parse_response(request, orjson.dumps(counted))
    assert (parsed.usage.prompt_tokens, parsed.usage.estimated) == (5, False)
    assert [d["embedding"] for d in orjson.loads(parsed.body)["data"]] == [[0.5], [0.25]]
    uncounted = {"predictions": [{"embeddings": {"values": [0.5]}}, {"embeddings": {"values": [0.25]}}]}
    assert ADAPTER.parse_response(request, orjson.dumps(uncounted)).usage.estimated
    with pytest.raises(ValueError):  # one vector for two inputs cannot be matched: the gateway's 502
        ADAPTER.parse_response(request, orjson.dumps({"predictions": counted["predictions"][:1]}))
