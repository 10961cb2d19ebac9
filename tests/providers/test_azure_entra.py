"""AZURE with Entra ID over real loopback: AKS workload-identity variables only, an HTTPS fake
Entra token endpoint (a test CA given to the client library), and a fake Azure OpenAI that accepts
only the tokens it issued, as Bearer, with no `api-key` header."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl

import openai
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.providers import credentials

TENANT = "00000000-0000-0000-0000-00000000000a"


def _tls(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1 signed by a fresh CA, and the CA's PEM file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context, str(tmp_path / "ca.pem")


class FakeEntra:
    def __init__(self, token_file) -> None:
        self.token_file = token_file
        self.assertions: list[str] = []
        self.tokens: set[str] = set()
        self.app = web.Application()
        self.app.router.add_get(f"/{TENANT}/v2.0/.well-known/openid-configuration", self._discovery)
        self.app.router.add_post(f"/{TENANT}/oauth2/v2.0/token", self._token)

    async def _discovery(self, request: web.Request) -> web.Response:
        root = f"https://{request.host}/{TENANT}"
        return web.json_response({"token_endpoint": f"{root}/oauth2/v2.0/token", "issuer": f"{root}/v2.0",
                                  "authorization_endpoint": f"{root}/oauth2/v2.0/authorize"})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.assertions.append(form.get("client_assertion", ""))
        if form.get("client_assertion") != self.token_file.read_text().strip() \
                or form.get("scope") != "https://cognitiveservices.azure.com/.default":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = "eyJ0eXAi." + secrets.token_hex(16)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})


@pytest.fixture
async def entra(aiohttp_server, tmp_path, monkeypatch):
    context, ca = _tls(tmp_path)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("federated-token-1")
    fake = FakeEntra(token_file)
    server = await aiohttp_server(fake.app, ssl=context)
    for name, value in {"AZURE_CLIENT_ID": "11111111-0000-0000-0000-000000000001", "AZURE_TENANT_ID": TENANT,
                        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
                        "AZURE_AUTHORITY_HOST": f"https://127.0.0.1:{server.port}",
                        "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca}.items():
        monkeypatch.setenv(name, value)
    credentials.forget()
    yield fake
    credentials.forget()


async def test_azure_with_workload_identity_sends_a_bearer_token_and_no_api_key(gateway, aiohttp_server, entra):
    seen = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in entra.tokens:
            return web.json_response({"error": {"message": "expired", "code": "401"}}, status=401)
        return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                               "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/openai/deployments/gpt-4o/chat/completions", chat)
    azure = await aiohttp_server(app)
    item = {"name": "azure", "supportedProvider": "AZURE", "url": f"http://127.0.0.1:{azure.port}",
            "apiVersion": "2024-10-21", "models": ["gpt-4o"]}
    gw = await gateway({"providers": [item]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key="caller", max_retries=0) as client:
        answer = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
        assert answer.choices[0].message.content == "hi"
        entra.token_file.write_text("federated-token-2")  # the kubelet rotated it
        entra.tokens.clear()  # and the provider no longer takes the first token: one refresh, one retry
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert entra.assertions == ["federated-token-1", "federated-token-2"]
    assert all("api-key" not in {k.lower() for k in headers} for headers in seen)
    assert seen[-1]["Authorization"].startswith("Bearer ")
