"""VERTEXAIGEMINI: Gemini's wire on Vertex AI; only the URL and the credential differ.

`url` is required and names the project and location, e.g.
`https://us-central1-aiplatform.googleapis.com/v1/projects/P/locations/us-central1`; the model is
then `{url}/publishers/google/models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`).
`apiKey`, when given, is an OAuth access token, sent as a Bearer token as it is. Without it the
token comes from Google credentials (proxy.providers.cloud, the `gcp` extra): the service account
in `credentials` (inline JSON, `env:NAME` or `file:/path`), else Application Default Credentials,
and is refreshed before it expires.
"""

from __future__ import annotations

from proxy.providers.base import Capabilities, Target, UpstreamRequest
from proxy.providers.gemini import Adapter as GeminiAdapter


class GoogleBearer:
    """Vertex's credential, for every publisher's models: a static token or a refreshed Google one."""

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def credential_key(self, target: Target) -> tuple | None:
        return None if target.api_key else ("gcp", target.credentials)

    def sign(self, target: Target, upstream_request: UpstreamRequest, token: str) -> None:
        upstream_request.headers["Authorization"] = f"Bearer {token}"


class Adapter(GoogleBearer, GeminiAdapter):
    model_path = "/publishers/google/models/"

    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, passthrough=False, keyless_extra="gcp"))
