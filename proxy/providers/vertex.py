"""VERTEXAIGEMINI: Gemini's wire on Vertex AI; only the URL and the credential differ.

`url` is required and names the project and location, e.g.
`https://us-central1-aiplatform.googleapis.com/v1/projects/P/locations/us-central1`; the model is
then `{url}/publishers/google/models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`).
`apiKey`, when given, is an OAuth access token, sent as a Bearer token as it is. Without it the
token comes from Google credentials (proxy.providers.cloud, the `gcp` extra): the service account
in `credentials` (inline JSON, `env:NAME` or `file:/path`), else Application Default Credentials,
and is refreshed before it expires. Embeddings go to `{url}/publishers/google/models/{model}:predict`.
"""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from proxy.providers.base import Capabilities, ChatRequest, Parsed, Target, UpstreamRequest
from proxy.providers.gemini import Adapter as GeminiAdapter
from proxy.providers.gemini_embeddings import read_embedding_params
from proxy.providers.vertex_embeddings import from_vertex_embeddings, to_vertex_embeddings


class GoogleBearer:
    """Vertex's credential, for every publisher's models: a static token or a refreshed Google one."""

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def credential_key(self, target: Target) -> tuple | None:
        return None if target.api_key else ("gcp", target.credentials)

    def sign(self, target: Target, upstream_request: UpstreamRequest, token: str) -> None:
        upstream_request.headers["Authorization"] = f"Bearer {token}"


class Adapter(GoogleBearer, GeminiAdapter):
    """Chat is Gemini's wire; embeddings are Vertex's own `:predict` (proxy.providers.vertex_embeddings)."""

    model_path = "/publishers/google/models/"

    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, passthrough=False, embeddings=True, keyless_extra="gcp"))

    def build_request(self, target: Target, request: ChatRequest) -> UpstreamRequest:
        if request.kind != "embeddings":
            return super().build_request(target, request)
        body = msgspec.json.encode(to_vertex_embeddings(read_embedding_params(request)))
        headers = {**target.headers, "Content-Type": "application/json", **self.auth_headers(target)}
        url = f"{(target.url or '').rstrip('/')}{self.model_path}{quote(request.model, safe='')}:predict"
        return UpstreamRequest("POST", url, headers, body)

    def parse_response(self, request: ChatRequest, body: bytes) -> Parsed:
        if request.kind != "embeddings":
            return super().parse_response(request, body)
        return from_vertex_embeddings(read_embedding_params(request), request.model, body)
