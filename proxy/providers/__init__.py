"""The provider table: `supportedProvider` → where its adapter lives, imported when first used.

No import-time side effects and no self-registration: adding a provider is one line here.
"""

from __future__ import annotations

import importlib

from proxy.providers.base import Adapter

TABLE: dict[str, str] = {
    "OPENAI": "proxy.providers.openai:Adapter",
    "AZURE": "proxy.providers.azure:Adapter",
    "GROQ": "proxy.providers.family:cloud",
    "MISTRAL": "proxy.providers.family:cloud",
    "DEEPSEEK": "proxy.providers.family:cloud",
    "TOGETHERAI": "proxy.providers.family:cloud",
    "FIREWORKS": "proxy.providers.family:cloud",
    "OPENROUTER": "proxy.providers.family:cloud",
    "XAI": "proxy.providers.family:cloud",
    "OLLAMA": "proxy.providers.family:hosted",
    "VLLM": "proxy.providers.family:hosted",
    "OPENAI_COMPATIBLE": "proxy.providers.family:hosted",
    "MOCK": "proxy.providers.mock:Adapter",
    "ANTHROPIC": "proxy.providers.anthropic:Adapter",
    "GEMINI": "proxy.providers.gemini:Adapter",
    "VERTEXAIGEMINI": "proxy.providers.vertex:Adapter",
    "VERTEXAIANTHROPIC": "proxy.providers.vertex_anthropic:Adapter",
    "BEDROCK": "proxy.providers.bedrock:Adapter",
}

_loaded: dict[str, Adapter] = {}


def names() -> list[str]:
    return sorted(TABLE)


def adapter(supported_provider: str) -> Adapter:
    """The adapter for a provider type; KeyError when the type is unknown."""
    found = _loaded.get(supported_provider)
    if found is not None:
        return found
    module, _, attr = TABLE[supported_provider].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    made = factory(supported_provider) if attr == "cloud" else factory()
    _loaded[supported_provider] = made
    return made
