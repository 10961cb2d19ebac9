"""Azure OpenAI: OpenAI's wire at a deployment URL, with `api-version` and an `api-key` header.

Without an `apiKey` the gateway authenticates with Entra ID (proxy.providers.cloud, the `azure`
extra): an access token for `https://cognitiveservices.azure.com/.default`, sent as
`Authorization: Bearer`, never as `api-key`.

The Responses API (a `responses` dialect passthrough) has no deployment in its URL: the
deployment is the body's `model`. It lives at `{url}/openai/v1/responses` (Azure's v1 API, no
`api-version`), or at `{url}/openai/responses?api-version=…` when the provider is configured with
a dated preview version (`2025-03-01-preview` and later), the only place those versions serve it.
"""

from __future__ import annotations

from urllib.parse import quote

from proxy.providers.base import Capabilities, ChatRequest, Target, UpstreamRequest
from proxy.providers.openai import Adapter as OpenAIAdapter


class Adapter(OpenAIAdapter):
    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, needs_api_version=True, embeddings=True,
                                      keyless_extra="azure", reasoning=True,
                                      dialects=frozenset({"responses"})))

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"api-key": target.api_key} if target.api_key else {}

    def credential_key(self, target: Target) -> tuple | None:
        return None if target.api_key else ("azure",)

    def sign(self, target: Target, upstream_request: UpstreamRequest, token: str) -> None:
        upstream_request.headers["Authorization"] = f"Bearer {token}"

    def url(self, target: Target, request: ChatRequest) -> str:
        path = "embeddings" if request.kind == "embeddings" else "chat/completions"
        deployment = quote(request.model, safe="")
        version = quote(target.api_version or "2024-10-21", safe="")
        return f"{self.base_url(target)}/openai/deployments/{deployment}/{path}?api-version={version}"

    def responses_url(self, target: Target) -> str:
        version = target.api_version or ""
        if version.endswith("-preview") and version >= "2025-03-01":
            return f"{self.base_url(target)}/openai/responses?api-version={quote(version, safe='')}"
        return f"{self.base_url(target)}/openai/v1/responses"
