"""Google credentials for Vertex over real loopback: a service account whose `token_uri` is a fake
Google token endpoint (the JWT checked against the account's freshly generated RSA key), and a
Vertex fake that answers 401 ACCESS_TOKEN_EXPIRED once."""

from __future__ import annotations

import base64
import json
import secrets

import openai
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.providers import cloud, credentials

MODEL = "gemini-2.0-flash-001"
BASE = "/v1/projects/p-1/locations/us-central1"
EXPIRED = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                     "status": "UNAUTHENTICATED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                               "reason": "ACCESS_TOKEN_EXPIRED"}]}}
ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello from Vertex."}]},
                          "finishReason": "STOP"}],
          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGoogle:
    """The token endpoint of a service account, and Vertex's generateContent behind its tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token_calls = 0
        self.tokens: set[str] = set()
        self.expire_next = 0
        self.seen: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/token", self._token)
        self.app.router.add_post(BASE + "/publishers/google/models/{call}", self._vertex)

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

    async def _token(self, request: web.Request) -> web.Response:
        self.token_calls += 1
        form = await request.post()
        head, claims, signature = form["assertion"].split(".")
        self.key.public_key().verify(_unb64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(),
                                     hashes.SHA256())  # raises (a 500) on a bad signature
        assert json.loads(_unb64(claims))["scope"] == cloud.GOOGLE_SCOPE
        token = "ya29." + secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    async def _vertex(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.tokens or self.expire_next:
            self.expire_next = max(self.expire_next - 1, 0)
            return web.json_response(EXPIRED, status=401)
        return web.json_response(ANSWER)


@pytest.fixture
async def google(aiohttp_server, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    credentials.forget()
    yield await FakeGoogle().start(aiohttp_server)
    credentials.forget()


def sdk(gw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0)


@pytest.mark.parametrize("how", ["inline", "file", "env"])
async def test_vertex_with_a_service_account_gets_one_token_and_survives_an_expired_one(gateway, google, tmp_path,
                                                                                       monkeypatch, how):
    account = orjson.dumps(google.account()).decode()
    spec = {"inline": account, "file": f"file:{tmp_path / 'sa.json'}", "env": "env:VERTEX_SA"}[how]
    (tmp_path / "sa.json").write_text(account)
    monkeypatch.setenv("VERTEX_SA", account)
    item = {"name": "vertex", "supportedProvider": "VERTEXAIGEMINI", "url": google.url + BASE,
            "credentials": spec, "models": [MODEL]}
    gw = await gateway({"providers": [item]})
    async with sdk(gw) as client:
        answers = [await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
                   for _ in range(3)]
        assert google.token_calls == 1
        google.expire_next = 1  # the provider says the token expired: one new token, one more try
        answers.append(await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}]))
    assert all(a.choices[0].message.content == "Hello from Vertex." for a in answers)
    assert google.token_calls == 2 and google.seen[-1] != google.seen[0]


async def test_an_invalid_service_account_is_a_502_naming_it(gateway, google):
    item = {"name": "vertex", "supportedProvider": "VERTEXAIGEMINI", "url": google.url + BASE,
            "credentials": '{"type": "service_account", "private_key": "not a key"}', "models": [MODEL]}
    gw = await gateway({"providers": [item]})
    async with sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_credentials"
    assert "service-account JSON" in caught.value.body["message"] and "not a key" not in caught.value.response.text
