"""VERTEXAIANTHROPIC: Claude on Vertex AI. The ANTHROPIC translation at Vertex's rawPredict URL, the
body without `model` and with Vertex's `anthropic_version`, a Google Bearer token; and over real
loopback with only a service-account file, across a token expiry (tests/fakes/google.py)."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest

from proxy import providers
from proxy.dialects.completions import parse
from proxy.errors import InvalidRequest
from proxy.providers import cloud
from proxy.providers.base import Target
from tests.fakes.google import BASE

ADAPTER = providers.adapter("VERTEXAIANTHROPIC")
URL = "https://us-east5-aiplatform.googleapis.com/v1/projects/p-1/locations/us-east5"
TOKEN = "ya29.secret-access-token"
CLAUDE = "claude-sonnet-4-5@20250929"
GEMINI = "gemini-2.0-flash-001"
EMBEDDING = "text-embedding-005"
HELLO = [{"role": "user", "content": "Hi"}]
QUESTION = {"model": CLAUDE, "messages": HELLO, "temperature": 0.2, "stop": ["END"]}


@pytest.mark.parametrize("stream, method", [(False, "rawPredict"), (True, "streamRawPredict")])
def test_the_model_is_in_the_url_and_the_token_a_bearer(stream, method):
    built = ADAPTER.build_request(Target("v", URL + "/", TOKEN), parse(orjson.dumps({**QUESTION, "stream": stream})))
    assert built.url == f"{URL}/publishers/anthropic/models/{CLAUDE}:{method}"
    assert built.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "x-api-key" not in built.headers and "anthropic-version" not in built.headers


def test_the_body_is_anthropics_without_model_and_with_vertexs_version():
    request = parse(orjson.dumps({**QUESTION, "stream": True}))
    vertex = orjson.loads(ADAPTER.build_request(Target("v", URL, TOKEN), request).body)
    anthropic = orjson.loads(providers.adapter("ANTHROPIC").build_request(Target("a", None, "k"), request).body)
    assert vertex.pop("anthropic_version") == "vertex-2023-10-16"
    assert "model" not in vertex and anthropic.pop("model") == CLAUDE
    assert vertex == anthropic and vertex["stream"] is True
    assert ADAPTER.stream_parser.__func__ is providers.adapter("ANTHROPIC").stream_parser.__func__


def test_a_model_name_cannot_leave_the_publisher_path():
    built = ADAPTER.build_request(Target("v", URL, TOKEN), parse(orjson.dumps({**QUESTION, "model": "../../x?y"})))
    assert built.url == f"{URL}/publishers/anthropic/models/..%2F..%2Fx%3Fy:rawPredict"


def test_errors_are_read_in_the_shape_they_come_in():
    google = orjson.dumps({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}})
    failure = ADAPTER.parse_error(429, {}, google)
    assert (failure.kind, failure.code, failure.message) == ("rate_limit", "resource_exhausted", "Quota exceeded")
    expired = ADAPTER.parse_error(401, {}, orjson.dumps({"error": {"code": 401, "status": "UNAUTHENTICATED"}}))
    assert expired.kind == "auth"
    overloaded = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    failure = ADAPTER.parse_error(529, {"Retry-After": "4"}, overloaded)
    assert (failure.kind, failure.code, failure.retry_after) == ("overloaded", "overloaded_error", 4.0)
    assert ADAPTER.parse_error(503, {}, b"<html>busy</html>").kind == "overloaded"


def test_embeddings_are_refused_and_url_is_required():
    assert ADAPTER.caps.needs_url and ADAPTER.caps.keyless_extra == "gcp" and not ADAPTER.caps.embeddings
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.build_request(Target("v", URL, TOKEN), parse(orjson.dumps({"model": CLAUDE, "input": "x"}), "embeddings"))
    assert caught.value.code == "unsupported_endpoint"


# -- over loopback, with only a service-account file ------------------------------------------------
def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0)


async def _ask_all(client) -> list:
    """Claude (answer and stream), Gemini and embeddings, on Vertex, through the gateway: what came back."""
    claude = await client.chat.completions.create(model=CLAUDE, messages=HELLO)
    stream = await client.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    gemini = await client.chat.completions.create(model=GEMINI, messages=HELLO)
    embedded = await client.embeddings.create(model=EMBEDDING, input=["a", "b"], encoding_format="float")
    return [claude.choices[0].message.content, streamed, gemini.choices[0].message.content,
            [d.embedding for d in embedded.data], embedded.usage.prompt_tokens]


async def test_claude_gemini_and_embeddings_on_vertex_share_one_token_and_pass_across_its_expiry(gateway, google, tmp_path):
    (tmp_path / "sa.json").write_text(orjson.dumps(google.account()).decode())
    google.lifetime = cloud.GOOGLE_MARGIN + 2  # fresh for 2 s, then inside the refresh margin
    common = {"url": google.url + BASE, "credentials": f"file:{tmp_path / 'sa.json'}"}
    gw = await gateway({"providers": [
        {"name": "claude", "supportedProvider": "VERTEXAIANTHROPIC", "models": [CLAUDE], **common},
        {"name": "gemini", "supportedProvider": "VERTEXAIGEMINI", "models": [GEMINI, EMBEDDING], **common}]})
    expected = ["Hello from Claude on Vertex.", "Hello from Claude on Vertex.", "Hello from Vertex.",
                [[0.5, -0.5], [0.5, -0.5]], 6]
    async with sdk(gw) as client:
        assert await _ask_all(client) == expected
        assert google.token_calls == 1 and len(set(google.seen)) == 1  # one token for both publishers
        await asyncio.sleep(2.2)
        assert await _ask_all(client) == expected  # near its expiry: still used while one fetch replaces it
        for _ in range(100):
            if google.token_calls == 2:
                break
            await asyncio.sleep(0.02)
        assert await _ask_all(client) == expected
        google.expire_next = 1  # Vertex refuses the token: one new token, the request once more
        assert await _ask_all(client) == expected
    assert google.token_calls == 3 and len(set(google.seen)) == 3
    assert all("model" not in body for body in google.bodies)


def test_a_messages_caller_is_translated_not_passed_through():
    """VERTEXAIANTHROPIC does not declare the `messages` dialect: a Messages caller's body is
    translated like a chat request's (fields a translation drops stay out), never its own body
    with Anthropic's caller headers, and its stream is read by the translating parser."""
    from proxy.dialects.messages import DIALECT
    from proxy.providers.anthropic import StreamParser

    body = {"model": CLAUDE, "max_tokens": 9, "top_k": 4, "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi",
                                                         "cache_control": {"type": "ephemeral"}}]}]}
    request, _ = DIALECT.request(orjson.dumps(body), {"anthropic-version": "2023-06-01", "anthropic-beta": "b"})
    assert "messages" not in ADAPTER.caps.dialects
    built = ADAPTER.build_request(Target("v", URL, TOKEN), request)
    sent = orjson.loads(built.body)
    assert built.url == f"{URL}/publishers/anthropic/models/{CLAUDE}:streamRawPredict"
    assert "top_k" not in sent and "model" not in sent and sent["anthropic_version"] == "vertex-2023-10-16"
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]  # no cache_control
    assert sent["max_tokens"] == 9
    assert "anthropic-beta" not in built.headers and "anthropic-version" not in built.headers
    assert isinstance(ADAPTER.stream_parser(request), StreamParser)
