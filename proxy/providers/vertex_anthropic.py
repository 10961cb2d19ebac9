"""VERTEXAIANTHROPIC: Claude on Vertex AI, the ANTHROPIC translation with Vertex's URL and credential.

`url` is required and names the project and location, as for VERTEXAIGEMINI, e.g.
`https://us-east5-aiplatform.googleapis.com/v1/projects/P/locations/us-east5` (the location
`global` is served by the host without a region: `https://aiplatform.googleapis.com/v1/projects/P/locations/global`).
The model is `{url}/publishers/anthropic/models/{model}:rawPredict` (`:streamRawPredict` for a
stream, whose answer is Anthropic's own event stream). The body is Anthropic's Messages body
without `model` (the URL names it) and with `anthropic_version: vertex-2023-10-16`, which Vertex
takes in place of the `anthropic-version` header. The credential is Vertex's (proxy.providers.vertex):
`apiKey` as an access token, else Google credentials (the `gcp` extra), as a Bearer token.
Errors come in two shapes: Anthropic's (`{"type": "error", "error": {...}}`, from the model) and
Google's (`{"error": {"status": ...}}`, from Vertex itself: quota, an expired token), each
classified by its own rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import msgspec

from proxy.providers import gemini
from proxy.providers.anthropic import Adapter as AnthropicAdapter
from proxy.providers.base import Capabilities, ChatRequest, Target, UpstreamFailure
from proxy.providers.vertex import GoogleBearer

VERSION = "vertex-2023-10-16"


class _Shape(msgspec.Struct):
    type: str = ""  # "error" in Anthropic's error body; absent from Google's


_shape = msgspec.json.Decoder(_Shape)
_google = gemini.Adapter()


class Adapter(GoogleBearer, AnthropicAdapter):
    def __init__(self) -> None:
        super().__init__(Capabilities(needs_url=True, passthrough=False, keyless_extra="gcp"))

    def body(self, request: ChatRequest) -> dict:
        body = super().body(request)
        del body["model"]  # named by the URL; Vertex refuses it in the body
        body["anthropic_version"] = VERSION
        return body

    def headers(self, target: Target) -> dict[str, str]:
        return {**target.headers, "Content-Type": "application/json", **self.auth_headers(target)}

    def url(self, target: Target, request: ChatRequest) -> str:
        method = "streamRawPredict" if request.stream else "rawPredict"
        # One quoted path segment: '/' and '..' in a model name cannot leave the publisher's path.
        return f"{(target.url or '').rstrip('/')}/publishers/anthropic/models/{quote(request.model, safe='@')}:{method}"

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        try:
            anthropic_shaped = _shape.decode(body).type == "error"
        except (msgspec.DecodeError, RecursionError):
            anthropic_shaped = True  # not JSON: Anthropic's reading says so, with the status's class
        if anthropic_shaped:
            return super().parse_error(status, headers, body)
        return _google.parse_error(status, headers, body)
