"""Vertex AI: Gemini's translation at a project URL, with a Bearer token; `url` is required."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from proxy import providers
from proxy.config import ProviderItem
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers.base import Target
from proxy.upstream.registry import validate

ADAPTER = providers.adapter("VERTEXAIGEMINI")
URL = "https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/locations/us-central1"
TOKEN = "ya29.secret-access-token"
QUESTION = {"model": "gemini-2.0-flash-001", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("stream, method", [(False, "generateContent"), (True, "streamGenerateContent?alt=sse")])
def test_the_model_lives_under_publishers_google_and_the_token_is_a_bearer(stream, method):
    upstream = ADAPTER.build_request(Target("v", URL + "/", TOKEN), parse(orjson.dumps({**QUESTION, "stream": stream})))
    assert upstream.url == f"{URL}/publishers/google/models/gemini-2.0-flash-001:{method}"
    assert upstream.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "x-goog-api-key" not in upstream.headers and TOKEN not in upstream.url


def test_the_translation_is_geminis():
    gemini = providers.adapter("GEMINI")
    request = parse(orjson.dumps({**QUESTION, "temperature": 0.1}))
    assert ADAPTER.build_request(Target("v", URL, TOKEN), request).body == \
        gemini.build_request(Target("g", None, "k"), request).body
    assert ADAPTER.stream_parser.__func__ is gemini.stream_parser.__func__


def test_a_model_name_cannot_leave_the_publisher_path():
    upstream = ADAPTER.build_request(Target("v", URL, TOKEN), parse(orjson.dumps({**QUESTION, "model": "../../x"})))
    assert upstream.url == f"{URL}/publishers/google/models/..%2F..%2Fx:generateContent"


def test_url_is_required():
    item = msgspec.convert({"name": "v", "supportedProvider": "VERTEXAIGEMINI", "models": ["m"]}, ProviderItem)
    with pytest.raises(InvalidRequest) as caught:
        validate([item])
    assert caught.value.param == "providers[0].url"
    assert ADAPTER.caps.needs_url
