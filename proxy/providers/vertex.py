"""VERTEXAIGEMINI: Gemini's wire on Vertex AI; only the URL and the credential differ.

`url` is required and names the project and location, e.g.
`https://us-central1-aiplatform.googleapis.com/v1/projects/P/locations/us-central1`; the model is
then `{url}/publishers/google/models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`)
and `apiKey` is an OAuth access token, sent as a Bearer token.
"""

from __future__ import annotations

from proxy.providers.base import Capabilities, Target
from proxy.providers.gemini import Adapter as GeminiAdapter


class Adapter(GeminiAdapter):
    model_path = "/publishers/google/models/"

    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, passthrough=False))

    def auth_headers(self, target: Target) -> dict[str, str]:
        return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
