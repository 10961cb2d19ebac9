"""OpenAI-wire providers: each is a base URL (and a capability or two) on the OpenAI adapter."""

from __future__ import annotations

from proxy.providers.base import Capabilities
from proxy.providers.openai import Adapter

_BASES = {
    "GROQ": "https://api.groq.com/openai/v1",
    "MISTRAL": "https://api.mistral.ai/v1",
    "DEEPSEEK": "https://api.deepseek.com/v1",
    "TOGETHERAI": "https://api.together.xyz/v1",
    "FIREWORKS": "https://api.fireworks.ai/inference/v1",
    "OPENROUTER": "https://openrouter.ai/api/v1",
    "XAI": "https://api.x.ai/v1",
}
# Mistral sends usage in its last chunk on its own and refuses `stream_options`.
_NO_STREAM_OPTIONS = {"MISTRAL"}


def cloud(name: str) -> Adapter:
    return Adapter(Capabilities(default_url=_BASES[name], embeddings=name != "XAI"),
                   stream_usage_option=name not in _NO_STREAM_OPTIONS)


def hosted() -> Adapter:
    """Ollama, vLLM and any OpenAI-compatible server: `url` required, `/v1` added to a bare host."""
    return Adapter(Capabilities(needs_url=True, hosted_by_default=True, embeddings=True),
                   default_path="/v1")
