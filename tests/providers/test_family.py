"""The OpenAI-wire family: base URLs and small capability deltas."""

from __future__ import annotations

import orjson
import pytest

from proxy.dialects.completions import parse
from proxy.providers import adapter
from proxy.providers.base import Target

REQ = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'


@pytest.mark.parametrize(("name", "url"), [
    ("GROQ", "https://api.groq.com/openai/v1/chat/completions"),
    ("MISTRAL", "https://api.mistral.ai/v1/chat/completions"),
    ("DEEPSEEK", "https://api.deepseek.com/v1/chat/completions"),
    ("TOGETHERAI", "https://api.together.xyz/v1/chat/completions"),
    ("FIREWORKS", "https://api.fireworks.ai/inference/v1/chat/completions"),
    ("OPENROUTER", "https://openrouter.ai/api/v1/chat/completions"),
    ("XAI", "https://api.x.ai/v1/chat/completions"),
    ("OPENAI", "https://api.openai.com/v1/chat/completions")])
def test_cloud_defaults(name, url):
    up = adapter(name).build_request(Target("p", None, "k"), parse(REQ))
    assert up.url == url and up.headers["Authorization"] == "Bearer k"
    asks = "stream_options" in orjson.loads(up.body)
    assert asks == (name != "MISTRAL")


@pytest.mark.parametrize("name", ["OLLAMA", "VLLM", "OPENAI_COMPATIBLE"])
def test_hosted_servers_need_a_url_and_get_v1_on_a_bare_host(name):
    a = adapter(name)
    assert a.caps.needs_url and a.caps.hosted_by_default
    assert a.build_request(Target("p", "http://ollama:11434", None), parse(REQ)).url == \
        "http://ollama:11434/v1/chat/completions"
    assert a.build_request(Target("p", "http://vllm:8000/v1/", None), parse(REQ)).url == \
        "http://vllm:8000/v1/chat/completions"
    assert "Authorization" not in a.build_request(Target("p", "http://h", None), parse(REQ)).headers
