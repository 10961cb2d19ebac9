"""Azure OpenAI: OpenAI's wire at a deployment URL, with `api-version` and an `api-key` header."""

from __future__ import annotations

from urllib.parse import quote

from proxy.providers.base import Capabilities, Target
from proxy.providers.openai import Adapter as OpenAIAdapter


class Adapter(OpenAIAdapter):
    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, needs_api_version=True, embeddings=True, reasoning=True))

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"api-key": target.api_key} if target.api_key else {}

    def url(self, target: Target, request) -> str:
        path = "embeddings" if request.kind == "embeddings" else "chat/completions"
        deployment = quote(request.model, safe="")
        version = quote(target.api_version or "2024-10-21", safe="")
        return f"{self.base_url(target)}/openai/deployments/{deployment}/{path}?api-version={version}"
