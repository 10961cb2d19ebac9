"""A loopback fake of Google: the OAuth token endpoint of a service account, and Vertex AI behind
the tokens it issued.

The token endpoint checks the signed JWT assertion against the account's freshly generated RSA
key and the scope, then issues a random access token expiring `lifetime` s later. Vertex answers
`generateContent` (Gemini), `predict` (text embeddings) and `rawPredict` / `streamRawPredict` (Claude: the body must have no
`model` and Vertex's `anthropic_version`) for an issued token, and 401 `ACCESS_TOKEN_EXPIRED`
for any other token or while `expire_next` > 0.
"""

from __future__ import annotations

import base64
import json
import secrets

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.providers import cloud

BASE = "/v1/projects/p-1/locations/us-central1"
EXPIRED = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                     "status": "UNAUTHENTICATED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                               "reason": "ACCESS_TOKEN_EXPIRED"}]}}
ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello from Vertex."}]},
                          "finishReason": "STOP"}],
          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}
CLAUDE = {"id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "Hello from Claude on Vertex."}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 3, "output_tokens": 6}}
CLAUDE_STREAM = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in [
    {"type": "message_start", "message": {**CLAUDE, "content": [], "stop_reason": None,
                                          "usage": {"input_tokens": 3, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello from Claude on Vertex."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}},
    {"type": "message_stop"}])


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGoogle:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lifetime = 3600
        self.token_calls = 0
        self.tokens: set[str] = set()
        self.expire_next = 0
        self.seen: list[str] = []
        self.bodies: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/token", self._token)
        self.app.router.add_post(BASE + "/publishers/google/models/{call}", self._gemini)
        self.app.router.add_post(BASE + "/publishers/anthropic/models/{call}", self._claude)

    async def start(self, aiohttp_server) -> FakeGoogle:
        self.server = await aiohttp_server(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}"
        return self

    def account(self) -> dict:
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": "p-1", "private_key_id": "k1", "private_key": pem,
                "client_email": "gateway@p-1.iam.gserviceaccount.com", "client_id": "1",
                "token_uri": self.url + "/token"}

    def issue(self) -> dict:
        """A new access token, as Google's token endpoints answer."""
        self.token_calls += 1
        token = "ya29." + secrets.token_hex(16)
        self.tokens.add(token)
        return {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        head, claims, signature = form["assertion"].split(".")
        self.key.public_key().verify(_unb64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(),
                                     hashes.SHA256())  # raises (a 500) on a bad signature
        assert json.loads(_unb64(claims))["scope"] == cloud.GOOGLE_SCOPE
        return web.json_response(self.issue())

    def _refused(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.tokens or self.expire_next:
            self.expire_next = max(self.expire_next - 1, 0)
            return web.json_response(EXPIRED, status=401)
        return None

    async def _gemini(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.match_info["call"].endswith(":predict"):  # text embeddings: one prediction per instance
            instances = (await request.json())["instances"]
            return web.json_response({"predictions": [
                {"embeddings": {"statistics": {"truncated": False, "token_count": 3}, "values": [0.5, -0.5]}}
                for _ in instances]})
        return web.json_response(ANSWER)

    async def _claude(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        if "model" in body or body.get("anthropic_version") != "vertex-2023-10-16":
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "bad body"}}, status=400)
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.match_info["call"].endswith(":streamRawPredict"):
            return web.Response(text=CLAUDE_STREAM, content_type="text/event-stream")
        return web.json_response(CLAUDE)


class FakeMetadata:
    """The GCE/GKE metadata server: every request must carry `Metadata-Flavor: Google`, and every
    answer does; the default service account's token is issued by (and valid at) `google`."""

    ROOT = "/computeMetadata/v1/"

    def __init__(self, google: FakeGoogle) -> None:
        self.google = google
        self.token_calls = 0
        self.app = web.Application()
        self.app.router.add_get("/", self._ping)
        self.app.router.add_get(self.ROOT + "project/project-id", self._project)
        self.app.router.add_get(self.ROOT + "instance/service-accounts/default/", self._account)
        self.app.router.add_get(self.ROOT + "instance/service-accounts/default/token", self._token)

    async def start(self, aiohttp_server) -> FakeMetadata:
        self.server = await aiohttp_server(self.app)
        self.host = f"127.0.0.1:{self.server.port}"
        return self

    @staticmethod
    def _answer(request: web.Request, body) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        headers = {"Metadata-Flavor": "Google"}
        if isinstance(body, str):
            return web.Response(text=body, headers=headers)
        return web.json_response(body, headers=headers)

    async def _ping(self, request: web.Request) -> web.Response:
        return self._answer(request, "computeMetadata/\n")

    async def _project(self, request: web.Request) -> web.Response:
        return self._answer(request, "p-1")

    async def _account(self, request: web.Request) -> web.Response:
        return self._answer(request, {"aliases": ["default"], "email": "gateway@p-1.iam.gserviceaccount.com",
                                      "scopes": [cloud.GOOGLE_SCOPE]})

    async def _token(self, request: web.Request) -> web.Response:
        self.token_calls += 1
        return self._answer(request, self.google.issue())
